"""The lazy kind table (protocol/kinds.py) against the family modules it routes to."""

import subprocess
import sys

import pytest

from provium.agent import ops
from provium.protocol import core, envelope, kinds, messages
from provium.protocol.codec import WireError


def test_every_kind_is_routed_to_the_family_that_defines_it():
    host, agent = {}, {}
    for family in kinds.FAMILIES:
        mod = kinds.family(family)
        for kind in mod.HOST_KINDS:
            assert kind not in host, kind
            host[kind] = family
        for kind in mod.AGENT_KINDS:
            assert kind not in agent, kind
            agent[kind] = family
    assert host == kinds.HOST
    assert agent == kinds.AGENT
    assert kinds.STREAM_KINDS == {op.KIND for op in messages.OPS if getattr(op, "STREAM", False)}
    # the host's full tables hold the same types
    assert {k: kinds.host_type(k) for k in kinds.HOST} == messages.HOST_KINDS
    assert {k: kinds.agent_type(k) for k in kinds.AGENT} == messages.AGENT_KINDS


def test_each_op_family_has_handlers_for_its_ops_in_the_agent():
    for kind, family in kinds.HOST.items():
        if family in ("core", "control"):
            assert family not in ops.FAMILIES  # hello, cancel, credit: the session's own
            continue
        ops.load(family)
        table = ops.STREAM_OPENERS if kind in kinds.STREAM_KINDS else ops.HANDLERS
        assert kind in table, kind


def test_unknown_kinds_still_give_the_same_errors():
    assert kinds.host_type("frobnicate") is None and kinds.agent_type("frobnicate") is None
    with pytest.raises(WireError, match="unknown op kind `frobnicate`"):
        envelope.decode_host({"ch": 3, "kind": "frobnicate", "data": None})
    with pytest.raises(WireError, match="unknown reply kind `frobnicate`"):
        envelope.decode_agent({"ch": 3, "kind": "frobnicate", "data": None})
    with pytest.raises(WireError, match=r"items\[0\]: unknown op kind `nope`"):
        envelope.decode_host({"ch": 1, "kind": "batch_op", "data": {"items": [{"kind": "nope", "data": None}]}})
    assert envelope.decode_host({"ch": 0, "kind": "hello", "data": {"protocol_version": 1}}).data == core.Hello()


def test_a_family_loads_on_the_first_decode_of_one_of_its_kinds():
    code = ("import sys\n"
            "from provium.protocol import envelope\n"
            "assert 'provium.protocol.ops_files' not in sys.modules\n"
            "env = envelope.decode_host({'ch': 1, 'kind': 'stat', 'data': {'path': '/'}})\n"
            "print(type(env.data).__module__, 'provium.protocol.ops_procs' in sys.modules,"
            " 'provium.protocol.messages' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["provium.protocol.ops_files", "False", "False"]


def test_concurrent_first_ops_of_a_family_all_find_their_handlers():
    """Pool threads that get a family's first ops at once: each waits for the one import."""
    code = (
        "import socket, sys, threading\n"
        "from provium.agent import AgentState, serve\n"
        "from provium.protocol.framing import encode_frame, read_frame\n"
        "a, b = socket.socketpair()\n"
        "threading.Thread(target=serve, args=(b, b, AgentState(local=True)), daemon=True).start()\n"
        "rf = a.makefile('rb')\n"
        "a.sendall(encode_frame({'ch': 0, 'kind': 'hello', 'data': {'protocol_version': 1}}))\n"
        "read_frame(rf)\n"
        "assert 'provium.agent.files' not in sys.modules\n"
        "a.sendall(b''.join(encode_frame({'ch': ch, 'kind': 'stat', 'data': {'path': '/'}}) for ch in range(1, 17)))\n"
        "print(sorted(read_frame(rf)['kind'] for _ in range(16)) == ['stat_result'] * 16)\n"
    )
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["True"]

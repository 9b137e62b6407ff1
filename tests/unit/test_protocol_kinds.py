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
        if family == "core":
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

"""Hypothesis: whatever bytes arrive, the agent answers with valid frames and goes on."""

from __future__ import annotations

import socket
import struct
import threading

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_client_util import AgentConn
from provium.agent import AgentState, serve
from provium.protocol.framing import MAX_FRAME

# One state for every example, as a guest agent keeps it across reconnects.
STATE = AgentState(local=True)

# Kinds whose valid decodings are harmless on the host (no writes, no spawns,
# no raw syscalls, no long sleeps); everything else is sent with random names.
SAFE_KINDS = ["get_time", "read", "write", "seek", "close", "stat", "listdir", "read_file",
              "proc_status", "get_pid", "wait", "kill", "proc_stdin_close", "tail_file",
              "fd_stream", "proc_stream", "worker_join", "worker_kill", "read_mem", "hello",
              "cancel", "credit", "set_time", "advance_clock"]

values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.dictionaries(
    st.sampled_from(["handle", "path", "max_bytes", "data", "offset", "whence", "start", "ns",
                     "bytes", "protocol_version", "signal", "timeout_ms", "addr", "len", "channel",
                     "follow_symlinks"]),
    values, max_size=5,
)
envelopes = st.fixed_dictionaries({
    "ch": st.integers(min_value=-2, max_value=50) | values,
    "kind": st.sampled_from(SAFE_KINDS) | st.text(max_size=12) | values,
    "data": fields | values,
})
bodies = st.one_of(
    st.binary(max_size=64),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    envelopes.map(lambda v: msgpack.packb(v, use_bin_type=True)),
)


def _session() -> tuple[AgentConn, threading.Thread, dict]:
    ours, theirs = socket.socketpair()
    out: dict = {}

    def run() -> None:
        try:
            out["reason"] = serve(theirs, theirs, STATE)
        finally:
            theirs.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return AgentConn(ours, thread=t), t, out


CHECK_CH = 987_654  # far from the channel numbers the garbage uses


def _answers_get_time(c: AgentConn) -> None:
    """A hello then a get_time are answered, whatever came before them."""
    c.send(0, "hello", {"protocol_version": 1})
    c.send(CHECK_CH, "get_time")
    env = c.recv(CHECK_CH)
    assert env.kind == "get_time_result" and env.data.ok
    # Replies on channel 0 come in order; the last handshake answer is ours.
    handshakes = [e for e in c.pending(0) if e.kind.startswith("hello")]
    assert handshakes and handshakes[-1].kind == "hello_ok"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=300))
def test_random_bytes_end_the_session_cleanly(junk, capfd):
    c, t, out = _session()
    c.send_raw(junk)
    c.close()  # the agent must reach a clean end whatever the junk was
    assert out["reason"] in ("eof", "truncated")
    assert c.bad_frames == []
    assert "Traceback" not in capfd.readouterr().err
    c2, _, _ = _session()
    try:
        _answers_get_time(c2)
    finally:
        c2.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(bodies, max_size=6), hello_first=st.booleans())
def test_well_framed_garbage_never_stops_the_agent(frames, hello_first, capfd):
    c, t, out = _session()
    try:
        if hello_first:
            c.send(0, "hello", {"protocol_version": 1})
        for body in frames:
            c.send_raw(struct.pack(">I", len(body)) + body)
        _answers_get_time(c)  # a valid op afterwards is answered
    finally:
        c.close()
    assert out["reason"] == "eof"
    assert c.bad_frames == []
    assert "Traceback" not in capfd.readouterr().err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(min_value=MAX_FRAME + 1, max_value=(1 << 32) - 1), tail=st.binary(max_size=100))
def test_oversized_headers_are_refused_on_channel_zero(length, tail, capfd):
    c, t, out = _session()
    c.send_raw(struct.pack(">I", length) + tail)
    env = c.recv(0)
    assert env.kind == "agent_error" and env.data.kind.value == "bad_request"
    assert str(length) in env.data.message
    c.close()  # EOF inside the skipped body: a clean end, never a hang
    assert out["reason"] == "truncated"
    assert c.bad_frames == []
    assert "Traceback" not in capfd.readouterr().err

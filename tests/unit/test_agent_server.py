"""The agent's multiplexer: handshake, channels, cancel, credit, bad input, CLI."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import msgpack
import pytest

import provium
from agent_client_util import gone, inproc_agent, spawn_agent
from provium.agent import AgentState
from provium.protocol.framing import MAX_FRAME, encode_frame
from provium.protocol.messages import (
    Cancel,
    Credit,
    GetTimeArgs,
    OpenFileArgs,
    ReadArgs,
    SleepClockArgs,
    TailFileArgs,
)
from provium.protocol.types import OpenMode, TailStart


def frame(obj) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_hello_reports_the_agent():
    c = spawn_agent(handshake=False)
    try:
        env = c.hello()
        assert env.ch == 0 and env.kind == "hello_ok"
        info = env.data.agent
        assert env.data.protocol_version == 1
        assert info.os == "linux"
        assert info.agent_version == provium.__version__
        assert info.kernel == os.uname().release
        assert info.capabilities == []
    finally:
        assert c.close() == 0
    assert c.bad_frames == []


def test_ops_before_the_handshake_are_refused_until_hello():
    c = inproc_agent(hello=False)
    try:
        err = c.error(GetTimeArgs())
        assert err.kind.value == "bad_request"
        assert err.message == "received `get_time` before handshake"
        assert c.hello().kind == "hello_ok"
        assert c.value(GetTimeArgs()).ns > 0
    finally:
        c.close()


def test_version_mismatch_answers_hello_err_and_stays_unready():
    c = inproc_agent(hello=False)
    try:
        env = c.hello(999)
        assert env.kind == "hello_err"
        assert (env.data.host_version, env.data.agent_version) == (999, 1)
        assert "before handshake" in c.error(GetTimeArgs()).message
        assert c.hello().kind == "hello_ok"  # the host may retry with the right version
    finally:
        c.close()


def test_a_second_hello_cancels_streams_but_keeps_handles(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"first\n")
    c = inproc_agent()
    try:
        h = c.value(OpenFileArgs(str(path), OpenMode(read=True)))
        ch, ack = c.open_stream(TailFileArgs(str(path), TailStart("beginning")))
        assert ack.ok
        assert c.read_stream(ch, 6)[0] == b"first\n"
        assert c.hello().kind == "hello_ok"  # the host reconnected (e.g. after a restore)
        with path.open("ab") as f:
            f.write(b"second\n")
        c.recv_none(ch, 0.3)  # the old stream is gone
        assert c.value(ReadArgs(h, 100)).data == b"first\nsecond\n"  # the handle survived
    finally:
        c.close()


def test_cancel_drops_a_late_reply_and_other_channels_keep_working():
    c = inproc_agent()
    try:
        ch = c.new_ch()
        c.send(ch, "sleep_clock", SleepClockArgs(400_000_000))
        c.send(ch, Cancel.KIND, Cancel())
        t0 = time.monotonic()
        assert c.value(GetTimeArgs()).ns > 0
        assert time.monotonic() - t0 < 0.3  # not stuck behind the sleep
        c.recv_none(ch, 0.6)
    finally:
        c.close()


def test_a_long_op_does_not_block_other_channels():
    c = inproc_agent()
    try:
        slow = c.new_ch()
        c.send(slow, "sleep_clock", SleepClockArgs(500_000_000))
        t0 = time.monotonic()
        assert c.value(GetTimeArgs()).ns > 0
        assert time.monotonic() - t0 < 0.3
        env = c.recv(slow)
        assert env.kind == "sleep_clock_result" and env.data.ok
        assert time.monotonic() - t0 >= 0.45
    finally:
        c.close()


def test_credit_window_bounds_unacknowledged_stream_data(tmp_path):
    from provium.protocol.framing import STREAM_WINDOW

    path = tmp_path / "big"
    blob = os.urandom(STREAM_WINDOW + (2 << 20))
    path.write_bytes(blob)
    c = inproc_agent()
    try:
        ch, ack = c.open_stream(TailFileArgs(str(path), TailStart("beginning")))
        assert ack.ok
        got, end = c.read_stream(ch, STREAM_WINDOW)
        assert end is None and len(got) == STREAM_WINDOW  # exactly the window, then it stops
        c.recv_none(ch, 0.3)
        c.send(ch, Credit.KIND, Credit(256 << 10))
        more, _ = c.read_stream(ch, 256 << 10)
        assert len(more) == 256 << 10
        c.recv_none(ch, 0.2)
        c.send(ch, Credit.KIND, Credit(2 * STREAM_WINDOW))
        rest, _ = c.read_stream(ch, len(blob) - len(got) - len(more))
        assert got + more + rest == blob
    finally:
        c.close()


def test_ops_on_channel_zero_and_busy_channels_are_refused():
    c = inproc_agent()
    try:
        c.send(0, "get_time")
        err = c.recv(0)
        assert err.kind == "agent_error" and "channel 0" in err.data.message
        c.send(7, "sleep_clock", SleepClockArgs(300_000_000))
        c.send(7, "get_time")
        first = c.recv(7)
        assert first.kind == "agent_error" and "already has a request in flight" in first.data.message
        assert c.recv(7).kind == "sleep_clock_result"
    finally:
        c.close()


@pytest.mark.parametrize("raw, ch, needle", [
    (struct.pack(">I", 1) + b"\xc1", 0, "not valid msgpack"),
    (frame(42), 0, "expected a map"),
    (frame({"ch": -1, "kind": "get_time"}), 0, "`ch`"),
    (frame({"ch": 3, "kind": "frobnicate"}), 3, "unknown op kind `frobnicate`"),
    (frame({"ch": 4, "kind": "read_file", "data": {"path": 5}}), 4, "read_file.path: expected a string"),
    (frame({"ch": 5, "kind": "read", "data": {"handle": 1}}), 5, "missing field `max_bytes`"),
    (frame({"ch": 6, "kind": "exec", "data": {"cmd": "true", "args": "x"}}), 6, "exec.args: expected an array"),
])
def test_malformed_requests_get_bad_request_on_their_channel(raw, ch, needle):
    c = inproc_agent()
    try:
        c.send_raw(raw)
        env = c.recv(ch)
        assert env.kind == "agent_error"
        assert env.data.kind.value == "bad_request"
        assert needle in env.data.message
        assert c.value(GetTimeArgs()).ns > 0  # and the session goes on
    finally:
        c.close()
    assert c.bad_frames == []


def test_an_oversized_length_is_refused_and_skipped_without_losing_sync():
    c = inproc_agent()
    try:
        n = MAX_FRAME + 1
        c.send_raw(struct.pack(">I", n))
        chunk = b"\0" * (1 << 20)
        left = n
        while left:
            k = min(left, len(chunk))
            c.send_raw(chunk[:k])
            left -= k
        err = c.recv(0, timeout=30)
        assert err.kind == "agent_error" and str(MAX_FRAME) in err.data.message
        assert c.value(GetTimeArgs()).ns > 0
    finally:
        c.close()


def test_a_per_op_exception_is_an_internal_error_not_a_crash(monkeypatch, capfd):
    from provium.agent import ops

    def boom(ctx, op):
        raise RuntimeError("boom")

    monkeypatch.setitem(ops.HANDLERS, "get_time", boom)
    c = inproc_agent()
    try:
        err = c.error(GetTimeArgs())
        assert err.kind.value == "internal" and "RuntimeError: boom" in err.message
        assert c.value(OpenFileArgs("/dev/null", OpenMode(read=True))) > 0  # still serving
    finally:
        c.close()
    err_text = capfd.readouterr().err
    assert "boom" in err_text and "Traceback" not in err_text


def test_truncated_frame_at_eof_ends_cleanly_with_one_log_line():
    c = spawn_agent(stderr=subprocess.PIPE)
    c.send_raw(struct.pack(">I", 100) + b"0123456789")
    assert c.close() == 0
    err = c.proc.stderr.read().decode()
    c.proc.stderr.close()
    assert "Traceback" not in err
    assert err.count("\n") == 1 and "mid-frame" in err


def test_session_end_returns_reason_and_state_serves_the_next_session():
    state = AgentState(local=True)
    c = inproc_agent(state)
    h = c.value(OpenFileArgs("/dev/null", OpenMode(read=True)))
    c.close()
    assert c.result["reason"] == "eof"
    c2 = inproc_agent(state)
    try:
        assert c2.value(ReadArgs(h, 10)).data == b""  # same handle, new connection
    finally:
        c2.close()


def _run_cli(*args, timeout=10):
    return subprocess.run([sys.executable, "-m", "provium.agent", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_help_and_usage_errors():
    r = _run_cli("--help")
    assert r.returncode == 0 and "--worker-fd" in r.stdout
    for bad in (["--bogus"], [], ["--fd"], ["--fd", "x"], ["--fd", "3", "--worker-fd", "4"],
                ["--fd", "3", "--uid", "0"]):
        r = _run_cli(*bad)
        assert r.returncode == 2, bad
        assert "usage:" in r.stderr and "Traceback" not in r.stderr


def test_cli_exits_zero_on_eof_and_kills_what_it_started():
    from provium.protocol.messages import GetPidArgs, RunAsyncArgs

    c = spawn_agent()
    h = c.value(RunAsyncArgs("sleep", ["30"]))
    pid = c.value(GetPidArgs(h))
    assert c.close() == 0
    assert gone(pid)


def test_cli_exit_also_kills_what_exec_left_running():
    from provium.protocol.messages import ExecArgs

    c = spawn_agent()
    r = c.value(ExecArgs("sh", ["-c", "sleep 60 & echo $!"]))
    daemon = int(r.stdout)
    r = c.value(ExecArgs("sh", ["-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"]))
    escaped = int(r.stdout)  # left our process group: not ours to track
    try:
        assert not gone(daemon, timeout=0.2)  # exec returned with the daemon running
        assert c.close(timeout=5) == 0
        assert gone(daemon)
        # Nothing the agent started inherited its end of the connection, so the
        # host sees the end although the escaped daemon still runs.
        assert c.eof.is_set() and not gone(escaped, timeout=0)
    finally:
        os.kill(escaped, 9)


def test_cli_on_sigterm_kills_its_children_and_dies_by_the_signal():
    import signal

    from provium.protocol.messages import GetPidArgs, RunAsyncArgs

    c = spawn_agent()
    h = c.value(RunAsyncArgs("sleep", ["30"]))
    pid = c.value(GetPidArgs(h))
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(10) == -signal.SIGTERM
    assert gone(pid)
    c.sock.close()


def test_cli_fd_that_is_not_a_socket_works_too():
    r_host, w_agent = os.pipe()
    r_agent, w_host = os.pipe()
    # Two pipes glued into one "connection": the agent reads fd 0-side, writes the other.
    script = (
        "import os,sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4);"
        "from provium.agent import serve, AgentState;"
        "serve(open(3,'rb',buffering=0), open(4,'wb',buffering=0), AgentState(local=True))"
    )
    p = subprocess.Popen([sys.executable, "-c", script, str(r_agent), str(w_agent)],
                         pass_fds=(r_agent, w_agent))
    os.close(r_agent)
    os.close(w_agent)
    try:
        os.write(w_host, encode_frame({"ch": 0, "kind": "hello", "data": {"protocol_version": 1}}))
        with os.fdopen(r_host, "rb") as rf:
            from provium.protocol.framing import read_frame

            reply = read_frame(rf)
            assert reply["kind"] == "hello_ok"
            os.close(w_host)
            assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()




def test_a_peer_that_leaves_without_a_byte_is_a_clean_end():
    from provium.agent import serve

    a, b = socket.socketpair()
    a.shutdown(socket.SHUT_WR)
    assert serve(b, b, AgentState(local=True)) == "eof"
    a.close()
    b.close()


def test_a_large_body_read_in_segments_stops_at_its_frame_end(tmp_path):
    """The guest port's reader has readv(): a large body is filled 4 KiB segment by
    segment, and the frame right behind it is still read and answered."""
    import os
    import threading

    from provium.agent.server import Session
    from provium.agent.state import AgentState
    from provium.protocol.decoder import FrameDecoder
    from provium.protocol.envelope import Envelope, decode_agent
    from provium.protocol.framing import encode_frame, unpack
    from provium.protocol.messages import GetTimeArgs, Hello, WriteFileArgs

    class PipeReader:
        def __init__(self, fd):
            self.fd = fd
            self.vectored = 0

        def readinto(self, buf):
            return os.readv(self.fd, [buf])

        def readv(self, bufs):
            self.vectored += 1
            return os.readv(self.fd, bufs)

    class Out:
        def __init__(self):
            self.dec = FrameDecoder()
            self.replies = {}
            self.both = threading.Event()

        def sendall(self, data):
            self.dec.feed(data)
            for body in self.dec:
                env = decode_agent(unpack(body))
                self.replies[env.ch] = env
            if {1, 2} <= set(self.replies):
                self.both.set()

    data = os.urandom((1 << 20) + 4097)
    path = str(tmp_path / "f.bin")
    stream = b"".join(encode_frame(Envelope(ch, kind, op).to_wire()) for ch, kind, op in (
        (0, "hello", Hello(1)), (1, "write_file", WriteFileArgs(path, data)), (2, "get_time", GetTimeArgs())))
    r, w = os.pipe()

    def feed():
        view = memoryview(stream)
        while view:  # in pieces, like a port handing over small buffers
            view = view[os.write(w, view[:3000]):]
        out.both.wait(30)  # the host stays until it has its replies
        os.close(w)

    reader, out = PipeReader(r), Out()
    t = threading.Thread(target=feed)
    t.start()
    assert Session(reader, out, AgentState(local=True)).run() == "eof"
    t.join()
    os.close(r)
    replies = out.replies
    assert replies[1].kind == "write_file_result" and replies[1].data.ok
    assert replies[2].kind == "get_time_result"
    assert reader.vectored > 0
    with open(path, "rb") as f:
        assert f.read() == data

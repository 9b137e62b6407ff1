"""A small synchronous client for driving the real agent in tests.

Two ways to run the agent: as `python -m provium.agent --fd N` over a socketpair
(the local backend's shape) or in-process with `serve()` on a thread.  Replies
are sorted per channel; every frame the agent sends is decoded with the
protocol's own decoder, and anything that fails to decode is kept in
`bad_frames` so a test can assert the agent never sent garbage.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from provium.protocol.envelope import Envelope, decode_agent
from provium.protocol.framing import CleanEof, FrameError, encode_frame, read_frame_body, unpack
from provium.protocol.messages import PROTOCOL_VERSION, STREAM_KINDS, Hello


class AgentConn:
    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None = None,
                 thread: threading.Thread | None = None) -> None:
        self.sock = sock
        self.proc = proc
        self.thread = thread
        self._ids = itertools.count(1)
        self._queues: dict[int, queue.Queue] = defaultdict(queue.Queue)
        self._qlock = threading.Lock()
        self.bad_frames: list[str] = []
        self.eof = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # ---- plumbing -------------------------------------------------------------------

    def _queue(self, ch: int) -> queue.Queue:
        with self._qlock:
            return self._queues[ch]

    def _read_loop(self) -> None:
        rfile = self.sock.makefile("rb")
        try:
            while True:
                body = read_frame_body(rfile)
                try:
                    env = decode_agent(unpack(body))
                except Exception as exc:  # the agent must never send this
                    self.bad_frames.append(f"{type(exc).__name__}: {exc}")
                    continue
                self._queue(env.ch).put(env)
        except (CleanEof, FrameError, OSError, ValueError):
            pass
        finally:
            self.eof.set()

    def new_ch(self) -> int:
        return next(self._ids)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, ch: int, kind: str, data: Any = None) -> None:
        self.sock.sendall(encode_frame(Envelope(ch, kind, data).to_wire()))

    def recv(self, ch: int, timeout: float = 10.0) -> Envelope:
        try:
            return self._queue(ch).get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no frame on channel {ch} within {timeout} s") from None

    def recv_none(self, ch: int, wait: float) -> None:
        """Assert nothing arrives on ch for `wait` seconds."""
        try:
            env = self._queue(ch).get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected frame on channel {ch}: {env.kind} {env.data!r}")

    def pending(self, ch: int) -> list[Envelope]:
        q = self._queue(ch)
        out = []
        while True:
            try:
                out.append(q.get_nowait())
            except queue.Empty:
                return out

    # ---- protocol ------------------------------------------------------------------

    def hello(self, version: int = PROTOCOL_VERSION) -> Envelope:
        self.send(0, "hello", Hello(version))
        return self.recv(0)

    def call(self, op: Any, timeout: float = 15.0) -> Envelope:
        """Send op on a fresh channel; its reply envelope (may be agent_error)."""
        assert op.KIND not in STREAM_KINDS
        ch = self.new_ch()
        self.send(ch, op.KIND, op)
        return self.recv(ch, timeout)

    def ok(self, op: Any, timeout: float = 15.0) -> Any:
        """The reply payload, asserting the reply kind is the op's own."""
        env = self.call(op, timeout)
        assert env.kind == op.REPLY[0], f"{op.KIND}: got {env.kind} {env.data!r}"
        return env.data

    def value(self, op: Any, timeout: float = 15.0) -> Any:
        """The `ok` value of an OpResult reply."""
        res = self.ok(op, timeout)
        assert res.ok, f"{op.KIND} failed: {res.value}"
        return res.value

    def error(self, op: Any, timeout: float = 15.0):
        """The AgentError of a reply that must be agent_error."""
        env = self.call(op, timeout)
        assert env.kind == "agent_error", f"{op.KIND}: expected agent_error, got {env.kind} {env.data!r}"
        return env.data

    def open_stream(self, op: Any) -> tuple[int, Any]:
        ch = self.new_ch()
        self.send(ch, op.KIND, op)
        env = self.recv(ch)
        assert env.kind == op.REPLY[0], f"{op.KIND}: got {env.kind} {env.data!r}"
        return ch, env.data

    def read_stream(self, ch: int, want: int | None = None, timeout: float = 10.0) -> tuple[bytes, Any]:
        """Collect frames until `want` bytes arrived or stream_end; (data, end or None)."""
        data = bytearray()
        while want is None or len(data) < want:
            env = self.recv(ch, timeout)
            if env.kind == "stream_end":
                return bytes(data), env.data
            assert env.kind == "stream_frame", f"unexpected {env.kind} {env.data!r} on stream {ch}"
            data += env.data.data
        return bytes(data), None

    def close(self, timeout: float = 10.0) -> int | None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        if self.thread is not None:
            self.thread.join(timeout)
            assert not self.thread.is_alive(), "serve() did not return after EOF"
        self.eof.wait(timeout)
        self.sock.close()
        return rc


def agent_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PROVIUM_AGENT_LOCAL"] = "1"  # never let a test change the host clock
    env.update(extra)
    return env


def spawn_agent(*, handshake: bool = True, env: dict[str, str] | None = None,
                stderr: Any = None) -> AgentConn:
    """`python -m provium.agent --fd N` on one end of a socketpair."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "provium.agent", "--fd", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), env=env or agent_env(), stderr=stderr,
    )
    theirs.close()
    conn = AgentConn(ours, proc=proc)
    if handshake:
        env_ = conn.hello()
        assert env_.kind == "hello_ok", env_
    return conn


def inproc_agent(state=None, *, handshake: bool = True, hello: bool = True) -> AgentConn:
    """serve() on a thread, over a socketpair; a local (host-clock-safe) state by default."""
    from provium.agent import AgentState, serve

    if state is None:
        state = AgentState(local=True)
    ours, theirs = socket.socketpair()
    result: dict = {}

    def run() -> None:
        try:
            result["reason"] = serve(theirs, theirs, state, handshake=handshake)
        finally:
            theirs.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    conn = AgentConn(ours, thread=t)
    conn.state = state  # type: ignore[attr-defined]
    conn.result = result  # type: ignore[attr-defined]
    if handshake and hello:
        env_ = conn.hello()
        assert env_.kind == "hello_ok", env_
    return conn


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once pid no longer runs (gone, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)

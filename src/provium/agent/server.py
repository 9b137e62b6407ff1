"""The agent's side of the channel multiplexer: one reader, a thread per request in flight.

`serve(rfile, wfile)` reads frames until a clean end of stream.  Each request
runs on a thread of its own while it lasts (reused from a pool, see pool.py),
so a long `wait` or `sleep_clock` never holds up another channel; every frame
is written under one lock so frames never interleave.
Bad input (a body that is not msgpack, an unknown op, a wrong field, an
oversized length) is answered with `agent_error` and the session goes on.
"""

from __future__ import annotations

import os
import threading
from enum import Enum
TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any

from provium import __version__
from provium.errors import ProtocolError, requires
from provium.protocol.codec import WireError, encode
from provium.protocol.envelope import CONTROL, Envelope, decode_host
from provium.protocol.decoder import FrameDecoder
from provium.protocol.framing import (
    MAX_FRAME,
    VIEW_BODY_MIN,
    CleanEof,
    DecodeError,
    FrameTooLarge,
    UnexpectedEof,
    encode_frame,
    encode_frame_parts,
    unpack,
)
from provium.protocol.core import PROTOCOL_VERSION, AgentError, AgentInfo, HelloOk
from provium.protocol.kinds import STREAM_KINDS

from . import ops, reaper
from .base import BAD_REQUEST, INTERNAL, AgentFail, WithFds, log
from .channel import Channel
from .pool import POOL
from .state import AgentState

_READ_CHUNK = 1 << 16  # a read between large bodies: a burst of small frames in one system call
_PORT_SEGMENT = 4096  # a virtio-serial port's buffer (the guest driver posts one page each)
_PORT_SEGMENTS = 64  # segments per readv(): up to 256 KiB per system call
# Ops that may change per-thread state through raw system calls: each runs on a
# thread that ends with it (see docs/protocol.md, "Layer 0").
_FRESH_THREAD = frozenset({"syscall", "ioctl", "batch_op"})
# Ops that cannot block (a clock read or set): the reader answers them itself,
# which spares handing them to another thread and back (see _run_inline).
_INLINE = frozenset({"get_time", "set_time", "advance_clock"})


def agent_info() -> AgentInfo:
    import os

    try:
        kernel = os.uname().release
    except OSError:
        kernel = None
    return AgentInfo(os="linux", agent_version=__version__, kernel=kernel, capabilities=[])


class Phase(str, Enum):
    """A session's lifecycle.  `hello` -> `ready` (a hello with another protocol
    version -> `refused`, a later good hello -> `ready` again); any state ->
    `dead` when the stream ends or a write fails.  Methods say which phases
    they run in with the `requires` guard (`provium.errors`); a request outside
    them is answered with `agent_error` (the agent never raises at its host),
    and nothing is written once `dead` (`send` checks that under its write
    lock, where a guard could not: the reader may mark the session dead
    between a check and the write)."""

    HELLO = "hello"  # waiting for the host's hello
    READY = "ready"
    REFUSED = "refused"  # the host spoke another protocol version
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


class WrongPhase(AgentFail):
    """A request arrived in a phase that does not take it (raised by the
    `requires` guard, answered as `agent_error` by the dispatcher)."""

    def __init__(self, phase: Phase, action: str) -> None:
        self.phase = phase
        self.action = action
        self.when = {
            Phase.HELLO: "before handshake",
            Phase.REFUSED: (f"before handshake (the last `hello` was refused: this agent speaks "
                            f"protocol version {PROTOCOL_VERSION})"),
        }.get(phase, f"while the session is {phase}")
        super().__init__(BAD_REQUEST, f"{action}: not possible while the session is {phase}")


class Session:
    """One connection (or one reconnect-less run over a byte stream).

    `phase` is the lifecycle (`Phase`); `state` is the agent's handle tables.
    """

    def __init__(self, rfile: Any, wfile: Any, state: AgentState, *, handshake: bool = True) -> None:
        self._readinto = _reader_into(rfile)
        self._readv = getattr(rfile, "readv", None)  # vectored reads (the guest's port)
        self._sock: Any = wfile if hasattr(wfile, "sendmsg") else None  # can carry descriptors
        if hasattr(wfile, "sendall"):
            self._write = wfile.sendall
        else:
            self._write = _file_writer(wfile)
        self.state = state
        self.handshake = handshake
        self.phase = Phase.HELLO if handshake else Phase.READY
        self._wlock = threading.Lock()
        self._clock = threading.Lock()
        self._channels: dict[int, Channel] = {}
        reaper.ensure_started()  # only does something when we are PID 1

    # ---- writing ------------------------------------------------------------------

    def send(self, ch: int, kind: str, payload: Any, fds: Any = ()) -> bool:
        """Write one frame.  `fds` ride along with it (SCM_RIGHTS; a worker's
        link only); the envelope then says how many with an `fds` count."""
        if fds and self._sock is None:
            fds = ()
            kind, payload = "agent_error", AgentError(INTERNAL, f"{kind}: this link cannot carry descriptors")
        wire = {"ch": ch, "kind": kind, "data": encode(payload)}
        if fds:
            wire["fds"] = len(fds)
        try:
            # A Blob in the payload (file contents, command output) is written
            # from its own buffer, not copied into the frame first.
            parts = encode_frame_parts(wire)
        except FrameTooLarge as exc:
            msg = f"{kind}: the reply is {exc.length} bytes, over the {exc.limit}-byte frame cap"
            parts = [encode_frame(Envelope(ch, "agent_error", AgentError(INTERNAL, msg)).to_wire())]
            fds = ()
        with self._wlock:
            if self.phase is Phase.DEAD:
                return False
            try:
                if fds:
                    import socket

                    first = parts[0]
                    sent = socket.send_fds(self._sock, [first], list(fds))
                    if sent < len(first):
                        self._write(first[sent:])
                    parts = parts[1:]
                for part in parts:
                    self._write(part)
                return True
            except (OSError, ValueError) as exc:
                # The host went away.  Streams notice through their next send.
                self.phase = Phase.DEAD
                log(f"connection write failed ({exc}); dropping replies")
        self.cancel_all()
        return False

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def dead(self) -> bool:
        return self.phase is Phase.DEAD

    def _error(self, ch: int, kind: Any, message: str) -> None:
        self.send(ch, "agent_error", AgentError(kind, message))

    def cancel_all(self) -> None:
        with self._clock:
            chans = list(self._channels.values())
            self._channels.clear()
        for c in chans:
            c.cancel()

    # ---- reading ------------------------------------------------------------------

    def run(self) -> str:
        """Serve until the stream ends.  Returns why: "eof", "truncated" or "error"."""
        dec = FrameDecoder(MAX_FRAME)
        readinto = self._readinto
        try:
            while True:
                # A large write_file goes to its file as it arrives (bulkwrite).
                if dec.large_body() is not None and self._stream_write(dec, readinto):
                    continue
                # Straight into the decoder: a large body lands in its final buffer.
                buf = dec.get_buffer(_READ_CHUNK)
                if len(buf) > _READ_CHUNK:
                    n = self._fill(buf, readinto)  # the rest of a large body (a write_file)
                else:
                    n = readinto(buf)
                if not n:
                    try:
                        dec.eof()
                    except CleanEof:
                        return "eof"
                    except UnexpectedEof as exc:
                        log(f"connection ended mid-frame ({exc.bytes_read} of {exc.expected} bytes)")
                        return "truncated"
                dec.buffer_updated(n)
                while True:
                    try:
                        body = dec.next()
                    except FrameTooLarge as exc:
                        self._error(CONTROL, BAD_REQUEST,
                                    f"frame length {exc.length} exceeds the {exc.limit}-byte cap; "
                                    "its body was skipped")
                        continue
                    if body is None:
                        break
                    self._on_frame(body)
        except _Truncated:
            log("connection ended inside a streamed write_file")
            return "truncated"
        except (OSError, ValueError) as exc:
            log(f"connection read failed: {exc}")
            return "error"
        finally:
            with self._wlock:
                # Late replies of this session must not reach whoever uses the
                # stream next (a guest re-serves the same port after a reconnect).
                self.phase = Phase.DEAD
            self.cancel_all()

    def busy(self, ch: int) -> bool:
        """Whether channel `ch` has a request in flight."""
        with self._clock:
            return ch in self._channels

    def _stream_write(self, dec: FrameDecoder, readinto: Any) -> bool:
        """Let bulkwrite take the large frame `dec` announced; True if it did."""
        from . import bulkwrite  # here: only a large frame needs it, not the agent's start

        try:
            return bulkwrite.try_stream(self, dec, readinto, self._readv)
        except bulkwrite.Truncated:
            raise _Truncated() from None

    def _fill(self, body: memoryview, readinto: Any) -> int:
        """Read into `body` until it is full or the stream ends; how many bytes came.

        On a virtio port (which hands over at most one 4 KiB buffer per read) the
        body is read as many 4 KiB segments per readv(): the kernel loops over
        them, not Python.  Only ever up to the body's end: the next frame's
        bytes stay in the port.  Measured in a TCG guest: 64 MiB in 0.6-0.85 s
        against 1.4-1.9 s reading 4 KiB per system call.
        """
        want = len(body)
        n = 0
        readv = self._readv
        if readv is None:
            while n < want:
                k = readinto(body[n:])
                if not k:
                    break
                n += k
            return n
        seg = _PORT_SEGMENT
        while n < want:
            end = min(want, n + seg * _PORT_SEGMENTS)
            k = readv([body[i:min(i + seg, end)] for i in range(n, end, seg)])
            if not k:
                break
            n += k
        return n

    def _on_frame(self, body: bytes | bytearray) -> None:
        try:
            if len(body) < VIEW_BODY_MIN:
                value = unpack(body)
            else:
                # A large bin (the data of a write_file) stays in the frame as a
                # view.  Imported here: most sessions never see such a frame, and
                # the agent's start imports only what serving needs.
                from provium.protocol.views import unpack_views

                value = unpack_views(body)
        except DecodeError as exc:
            self._error(CONTROL, BAD_REQUEST, f"frame body is not valid msgpack ({exc})")
            return
        try:
            env = decode_host(value)
        except WireError as exc:
            ch = getattr(exc, "ch", None)
            self._error(CONTROL if ch is None else ch, BAD_REQUEST, f"malformed request: {exc}")
            return
        except Exception as exc:  # e.g. absurdly nested values
            self._error(CONTROL, BAD_REQUEST, f"malformed request: {type(exc).__name__}: {exc}")
            return
        self._dispatch(env)

    # ---- dispatch -----------------------------------------------------------------

    def _dispatch(self, env: Envelope) -> None:
        try:
            if env.kind == "hello":
                self._hello(env)
            else:
                self._request(env)
        except WrongPhase as exc:
            if exc.phase is not Phase.DEAD:  # a dead session answers nothing
                self._error(env.ch, BAD_REQUEST, f"received `{env.kind}` {exc.when}")

    def _wrong_state(self, action: str) -> "WrongPhase":
        return WrongPhase(self.phase, action)

    @requires(Phase.READY, attr="phase")
    def _request(self, env: Envelope) -> None:
        kind = env.kind
        if kind == "cancel":
            with self._clock:
                chan = self._channels.pop(env.ch, None)
            if chan is not None:
                chan.cancel()
            return
        if kind == "credit":
            with self._clock:
                chan = self._channels.get(env.ch)
            if chan is not None:
                chan.credit(env.data.bytes)
            return
        if env.ch == CONTROL:
            self._error(CONTROL, BAD_REQUEST,
                        f"`{kind}` sent on channel 0, which carries only the handshake; "
                        "send ops on channel 1 or above")
            return
        if kind in _INLINE:
            self._run_inline(env)
            return
        chan = Channel(self, env.ch, self.state)
        with self._clock:
            busy = env.ch in self._channels
            if not busy:
                self._channels[env.ch] = chan
        if busy:
            self._error(env.ch, BAD_REQUEST,
                        f"channel {env.ch} already has a request in flight; use a fresh channel")
            return
        if kind in _FRESH_THREAD:
            POOL.fresh(self._run_op, chan, env)
        else:
            POOL.submit(self._run_op, chan, env)

    @requires(Phase.HELLO, Phase.READY, Phase.REFUSED, attr="phase")  # not DEAD: the stream is gone
    def _hello(self, env: Envelope) -> None:
        if env.ch != CONTROL:
            self._error(env.ch, BAD_REQUEST, "`hello` belongs on channel 0")
            return
        if not self.handshake:
            self._error(CONTROL, BAD_REQUEST, "this is a worker link, which has no handshake")
            return
        # A hello on a live session means the host reconnected (e.g. after a VM
        # restore): whoever listened on the old channels is gone.
        self.cancel_all()
        version = env.data.protocol_version
        if version != PROTOCOL_VERSION:
            from provium.protocol.ops_control import HelloErr  # a refusal is rare: not at start

            self.phase = Phase.REFUSED
            self.send(CONTROL, HelloErr.KIND, HelloErr(host_version=version, agent_version=PROTOCOL_VERSION))
            return
        self.phase = Phase.READY
        self.send(CONTROL, HelloOk.KIND, HelloOk(protocol_version=PROTOCOL_VERSION, agent=agent_info()))

    def _run_inline(self, env: Envelope) -> None:
        """A cheap op, answered by the reader itself before it reads on: nothing
        can cancel or credit it meanwhile, so it is not registered in flight
        (no locks, no thread hop: the whole op is a few function calls)."""
        if env.ch in self._channels:  # only this thread adds entries
            self._error(env.ch, BAD_REQUEST,
                        f"channel {env.ch} already has a request in flight; use a fresh channel")
            return
        try:
            reply_kind, payload = ops.call(Channel(self, env.ch, self.state), env.kind, env.data)
        except AgentFail as exc:
            reply_kind, payload = "agent_error", AgentError(exc.kind, exc.message)
        except Exception as exc:
            log(f"{env.kind} on channel {env.ch} failed: {type(exc).__name__}: {exc}")
            reply_kind, payload = "agent_error", AgentError(INTERNAL, f"{env.kind}: {type(exc).__name__}: {exc}")
        self.send(env.ch, reply_kind, payload)

    def _run_op(self, chan: Channel, env: Envelope) -> None:
        kind = env.kind
        try:
            if kind in STREAM_KINDS:
                self._run_stream(chan, env)
            else:
                reply_kind, payload = ops.call(chan, kind, env.data)
                if isinstance(payload, WithFds):
                    try:
                        chan.reply(reply_kind, payload.payload, payload.fds)
                    finally:
                        for fd in payload.fds:
                            os.close(fd)
                else:
                    chan.reply(reply_kind, payload)
        except AgentFail as exc:
            chan.reply("agent_error", AgentError(exc.kind, exc.message))
        except Exception as exc:
            log(f"{kind} on channel {chan.ch} failed: {type(exc).__name__}: {exc}")
            chan.reply("agent_error", AgentError(INTERNAL, f"{kind}: {type(exc).__name__}: {exc}"))
        finally:
            with self._clock:
                if self._channels.get(chan.ch) is chan:
                    del self._channels[chan.ch]
            chan.close()

    def _run_stream(self, chan: Channel, env: Envelope) -> None:
        reply_kind, ack, pump = ops.open_stream(chan, env.kind, env.data)
        if not chan.reply(reply_kind, ack) or pump is None:
            return
        try:
            pump(chan)
        except Exception as exc:
            # The ack is out: the host now only listens for frames and stream_end.
            log(f"{env.kind} stream on channel {chan.ch} failed: {type(exc).__name__}: {exc}")
            from provium.protocol.core import OsError
            from provium.protocol.ops_streams import StreamEnd  # loaded with the stream's family

            chan.end(StreamEnd("error", OsError(0, f"{env.kind}: {type(exc).__name__}: {exc}")))


class _Truncated(ProtocolError):  # noqa: N818  (control flow inside run(), never leaves it)
    """The stream ended inside a frame bulkwrite was taking."""


def _reader_into(rfile: Any):
    """readinto(buffer) -> bytes read (0 at the end), at most one system call."""
    if hasattr(rfile, "recv_into"):  # a socket
        return rfile.recv_into
    # readinto1: whatever is there (a buffered file's readinto would wait to fill it all).
    into = getattr(rfile, "readinto1", None) or getattr(rfile, "readinto", None)
    if into is not None:
        return into
    read = getattr(rfile, "read1", None) or rfile.read

    def readinto(buf: Any) -> int:
        data = read(len(buf))
        buf[:len(data)] = data
        return len(data)

    return readinto


def _file_writer(wfile: Any):
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = wfile.write(view)
            if n is None:  # non-blocking raw file with a full buffer
                raise OSError("write would block")
            view = view[n:]
        flush = getattr(wfile, "flush", None)
        if flush is not None:
            flush()

    return write


def serve(rfile: Any, wfile: Any, state: AgentState | None = None, *, handshake: bool = True) -> str:
    """Serve one byte stream until it ends; returns "eof", "truncated" or "error".

    `rfile`/`wfile` are blocking binary file objects, or the same connected
    socket twice.  Pass the same `state` to successive calls to keep files,
    processes and workers across reconnects.  `handshake=False` is the worker
    link: ops are accepted from the first frame.
    """
    if state is None:
        state = AgentState()
    return Session(rfile, wfile, state, handshake=handshake).run()

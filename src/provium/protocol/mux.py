"""Host side of the channel multiplexer (asyncio).

Many ops and streams share one byte stream to the agent: every request gets a
fresh channel number, its reply comes back on that channel, and a stream keeps
its channel until it ends or the host cancels it.  Stream data flows under a
per-channel credit window so a slow consumer bounds the agent's (and our)
buffering instead of blocking every other channel.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from enum import Enum
from typing import Any

from ..errors import ProtocolError, requires

from .codec import WireError
from .envelope import CONTROL, Envelope, decode_agent
from .decoder import FrameDecoder
from .framing import (
    STREAM_WINDOW,
    VIEW_BODY_MIN,
    Blob,
    CleanEof,
    DecodeError,
    FrameError,
    encode_frame_parts,
    unpack,
)
from .messages import PROTOCOL_VERSION, STREAM_KINDS, Cancel, Credit, Hello, HelloErr, HelloOk
from .types import AgentError, AgentInfo, StreamEnd
from .views import unpack_views
from .wire import FrameProtocol

# One read takes whatever the stream reader holds (it buffers at most a few
# hundred KiB before it stops reading the socket), so a burst of frames is
# decoded in one pass (the asyncio (reader, writer) flavour only).
_READ_MAX = 1 << 20
# Credit goes back once this much of a stream was consumed: a quarter of the
# window, so the agent always has room for more while the credit travels.
_CREDIT_AT = STREAM_WINDOW // 4


# How a stream frame's envelope starts on the wire (`"kind": "stream_frame"`,
# packed right after the channel): looked for in a large body's first bytes.
_STREAM_FRAME_KIND = b"\xa4kind\xacstream_frame"


def _unpack(body: bytes | bytearray) -> Any:
    """A body's value; a large stream frame's data stays in the body as a
    read-only view (MuxStream.read copies it out once, joined with the chunks
    queued behind it), instead of msgpack copying it into a bytes of its own."""
    if len(body) >= VIEW_BODY_MIN and body.find(_STREAM_FRAME_KIND, 0, 64) >= 0:
        value = unpack_views(body)
        if isinstance(value, dict) and value.get("kind") == "stream_frame":
            return value
        # Only a stream's chunks may be views: any other value reaches its
        # caller as bytes (the mark matched somewhere else: unpack it plainly).
    return unpack(body)


# A bytes value at least this large is sent from its own buffer (framing.Blob).
_BLOB_SEND = 1 << 20
# A larger part goes to the transport in slices of this size, each once the one
# before has mostly left: asyncio's transport (Python 3.11) copies whatever the
# socket does not take at once into its own buffer, and 64 MiB copied in one go
# held the loop 40-90 ms while the guest, its bytes all read, waited.
_SEND_SLICE = 1 << 18


def _blob_large(value: Any, depth: int) -> Any:
    """`value` (a wire envelope) with its large bytes values wrapped as Blobs,
    looking `depth` maps deep (a request's data sits at the second level).
    A map's large values go last in it (a map's order is free): the agent can
    then write a large write_file's data to its file as it arrives, having
    seen every other field first (agent/bulkwrite.py)."""
    if isinstance(value, dict):
        if depth < 0:
            return value
        out = {k: _blob_large(v, depth - 1) for k, v in value.items()}
        large = [k for k, v in out.items() if isinstance(v, Blob)]
        for k in large:
            out[k] = out.pop(k)
        return out
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) >= _BLOB_SEND:
        return Blob(value)
    return value


class ClientError(ProtocolError):
    """Talking to the agent failed."""


class ConnectError(ClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"agent: connect failed: {detail}")


class ConnectionLost(ClientError):
    def __init__(self, detail: str = "connection to the agent was lost") -> None:
        super().__init__(f"agent: {detail}")


class FrameClientError(ClientError):
    def __init__(self, err: Exception) -> None:
        super().__init__(f"agent: bad frame from agent: {err}")


class VersionMismatch(ClientError):
    def __init__(self, host: int, agent: int) -> None:
        self.host = host
        self.agent = agent
        super().__init__(f"agent: protocol version mismatch (host: {host}, agent: {agent})")


class UnexpectedMessage(ClientError):
    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"agent: expected `{expected}` but the agent sent `{actual}`")


class AgentFailure(ClientError):
    """The agent answered with `agent_error` instead of a result."""

    def __init__(self, error: AgentError) -> None:
        self.error = error
        self.kind = error.kind.value
        super().__init__(f"agent error ({self.kind}): {error.message}")


class StreamSourceError(ClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"agent: stream source failed: {detail}")


class MuxStream:
    """One open stream channel.  `read()` yields chunks; None means end of stream.

    Fed on the loop by the client's reader, without a task in between: a
    chunk may be a read-only view of the frame it came in (no copy); `read()`
    hands out bytes, everything queued joined in one copy (one wake-up of the
    reading thread per batch instead of one per frame).
    """

    def __init__(self, client: "MuxClient", ch: int) -> None:
        self._client = client
        self.ch = ch
        self._chunks: deque[bytes | memoryview] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self.end: StreamEnd | None = None
        self.lost: ClientError | None = None
        self.closed = False
        self._unacked = 0

    def _push(self, env: Envelope) -> None:
        if env.kind == "stream_frame":
            if len(env.data.data):
                self._chunks.append(env.data.data)
        elif env.kind == "stream_end":
            self.end = env.data
        self._wake()

    def _fail(self, err: ClientError) -> None:
        self.lost = err
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def _idle(self) -> bool:
        return not self._chunks and self.end is None and self.lost is None and not self.closed

    @property
    def finished(self) -> bool:
        return not self._chunks and (self.end is not None or self.lost is not None or self.closed)

    async def read(self, timeout: float | None) -> bytes | None:
        """Next chunk, b"" on timeout, None once the stream has ended and is drained."""
        if self._idle():
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return b""
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        if self._chunks:
            chunks = self._chunks
            if len(chunks) == 1:
                first = chunks.popleft()
                chunk = first if isinstance(first, bytes) else bytes(first)
            else:
                chunk = b"".join(chunks)
                chunks.clear()
            self._unacked += len(chunk)
            if self._unacked >= _CREDIT_AT and self.end is None and not self.closed:
                n, self._unacked = self._unacked, 0
                await self._client._send(Envelope(self.ch, Credit.KIND, Credit(n)))
            return chunk
        if self.lost is not None and self.end is None:
            raise self.lost
        return None

    def buffered(self) -> int:
        return sum(len(c) for c in self._chunks)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        self._client._streams.pop(self.ch, None)
        if self.end is None and not self._client.closed:
            try:
                await self._client._send(Envelope(self.ch, Cancel.KIND, Cancel()))
            except ClientError:
                pass


class ClientState(str, Enum):
    """The client's lifecycle: `open` until the connection breaks (`lost`, the
    error is kept in `MuxClient.lost`) or we close it (`closed`)."""

    OPEN = "open"
    LOST = "lost"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class MuxClient:
    """Talks to one agent over one byte stream.

    Made by `open_unix()` / `open_socket()` (a `wire.FrameProtocol` reads
    frames straight into the decoder and hands them over on the loop), or from
    an asyncio (reader, writer) pair, then read by a task (`_task`, started by
    `start()`).  Either way every body goes through `_on_body`.  Also owns
    short cancel notices (`_tasks`); `close()` stops them all.
    """

    def __init__(self, reader: asyncio.StreamReader | None, writer: Any) -> None:
        self._reader = reader
        self._writer = writer  # write(), drain(), close(): a StreamWriter or a FrameProtocol
        self._protocol: FrameProtocol | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, MuxStream] = {}
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.state = ClientState.OPEN
        self.lost: ClientError | None = None
        self.agent_info: AgentInfo | None = None

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    def _wrong_state(self, action: str) -> ClientError:
        # The reason the connection broke says more than "closed" does.
        return self.lost or ConnectionLost("the connection to the agent is closed")

    @classmethod
    async def open_unix(cls, path: str) -> "MuxClient":
        """A started client on a new connection to the unix socket `path`."""
        _, proto = await asyncio.get_running_loop().create_unix_connection(FrameProtocol, path)
        return cls._over(proto)

    @classmethod
    async def open_socket(cls, sock: Any) -> "MuxClient":
        """A started client on `sock`, an already connected stream socket (it takes it over)."""
        _, proto = await asyncio.get_running_loop().create_unix_connection(FrameProtocol, sock=sock)
        return cls._over(proto)

    @classmethod
    def _over(cls, proto: FrameProtocol) -> "MuxClient":
        client = cls(None, proto)
        client._protocol = proto
        proto.attach(client._on_body, client._input_ended)
        return client

    @classmethod
    async def connect(cls, reader: Any, writer: Any = None, *, version: int = PROTOCOL_VERSION,
                      timeout: float | None = 10.0) -> "MuxClient":
        """A client that has completed hello: over `reader` (a connected socket,
        read by a `FrameProtocol`) or over an asyncio (reader, writer) pair."""
        if writer is None:
            client = await cls.open_socket(reader)
        else:
            client = cls(reader, writer)
            client.start()
        try:
            await client.hello(version, timeout=timeout)
        except BaseException:
            await client.close()
            raise
        return client

    def start(self) -> None:
        """Start reading an asyncio StreamReader (a client made by open_* reads already)."""
        if self._reader is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def hello(self, version: int = PROTOCOL_VERSION, timeout: float | None = 10.0) -> HelloOk:
        reply = await self._request(CONTROL, Hello(version), timeout)
        if isinstance(reply.data, HelloErr):
            raise VersionMismatch(reply.data.host_version, reply.data.agent_version)
        if not isinstance(reply.data, HelloOk):
            raise UnexpectedMessage("hello_ok", reply.kind)
        self.agent_info = reply.data.agent
        return reply.data

    @requires(ClientState.OPEN)
    async def _send(self, env: Envelope) -> None:
        # A large bytes value (a write_file's data) goes to the transport as a
        # part of its own instead of being copied into a packed body and then
        # again behind the header.
        parts = encode_frame_parts(_blob_large(env.to_wire(), 2))
        async with self._write_lock:
            try:
                await self._write_parts(parts)
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:
                raise self._mark_lost(ConnectionLost(f"write failed: {exc}")) from exc

    async def _write_parts(self, parts: list[Any]) -> None:
        pieces: list[Any] = []
        for part in parts:
            if len(part) <= _SEND_SLICE:
                pieces.append(part)
            else:
                view = memoryview(part).cast("B")
                pieces.extend(view[i:i + _SEND_SLICE] for i in range(0, len(view), _SEND_SLICE))
        i = 0
        try:
            for i, piece in enumerate(pieces):  # noqa: B007  (read after the loop on a cancel)
                self._writer.write(piece)
                if len(piece) == _SEND_SLICE:
                    await self._writer.drain()
        except asyncio.CancelledError:
            # A frame is never left half-sent: the rest goes to the transport
            # at once (copied there, as before the slicing) and the cancel goes on.
            for piece in pieces[i + 1:]:
                self._writer.write(piece)
            raise

    async def _request(self, ch: int, op: Any, timeout: float | None) -> Envelope:
        fut = asyncio.get_running_loop().create_future()
        self._pending[ch] = fut
        try:
            await self._send(Envelope(ch, op.KIND, op))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(ch, None)
            # A failed send marks every pending future lost, this one included,
            # and nobody awaits it: retrieve it so asyncio does not log it at GC.
            if fut.done() and not fut.cancelled():
                fut.exception()

    async def call(self, op: Any, timeout: float | None = None) -> Any:
        """Send one op, return its reply payload (an OpResult, SyscallResult, ...)."""
        if op.KIND in STREAM_KINDS:
            raise ValueError(f"`{op.KIND}` opens a stream; use open_stream()")
        ch = next(self._ids)
        try:
            reply = await self._request(ch, op, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # The agent may still be working on it (a command, a blocked wait):
            # tell it we stopped listening, so it can stop too.  A task, because
            # a cancelled caller must not wait for the write.
            if self.state is ClientState.OPEN:
                task = asyncio.get_running_loop().create_task(self._send_cancel(ch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise
        return self._check(op, reply)

    async def _send_cancel(self, ch: int) -> None:
        try:
            await self._send(Envelope(ch, Cancel.KIND, Cancel()))
        except ClientError:
            pass

    def _check(self, op: Any, reply: Envelope) -> Any:
        if reply.kind == "agent_error":
            raise AgentFailure(reply.data)
        expected = op.REPLY[0]
        if reply.kind != expected:
            raise UnexpectedMessage(expected, reply.kind)
        return reply.data

    async def open_stream(self, op: Any, timeout: float | None = None) -> tuple[Any, MuxStream | None]:
        """Open a stream op.  Returns (ack OpResult, stream or None when refused)."""
        ch = next(self._ids)
        stream = MuxStream(self, ch)
        self._streams[ch] = stream
        try:
            reply = await self._request(ch, op, timeout)
            ack = self._check(op, reply)
        except BaseException:
            self._streams.pop(ch, None)
            raise
        if not ack.ok:
            self._streams.pop(ch, None)
            return ack, None
        return ack, stream

    async def _read_loop(self) -> None:
        """Feed an asyncio StreamReader's bytes through the same decoder and dispatch."""
        assert self._reader is not None
        dec = FrameDecoder()
        try:
            while True:
                data = await self._reader.read(_READ_MAX)
                if not data:
                    dec.eof()  # CleanEof at a frame boundary, else UnexpectedEof
                dec.feed(data)
                for body in dec:
                    self._on_body(body)
        except asyncio.CancelledError:
            self._input_ended(ConnectionLost("the connection to the agent is closed"))
            raise
        except CleanEof:
            self._input_ended(None)
        except Exception as exc:
            self._input_ended(exc)

    def _input_ended(self, exc: BaseException | None) -> None:
        """No more frames come: None for a clean end of stream, else why."""
        if exc is None:
            err: ClientError = ConnectionLost("the agent closed the connection")
        elif isinstance(exc, ClientError):
            err = exc
        elif isinstance(exc, (FrameError, WireError)):
            err = FrameClientError(exc)
        elif isinstance(exc, (OSError, asyncio.IncompleteReadError)):
            err = ConnectionLost(f"read failed: {exc}")
        else:
            err = FrameClientError(DecodeError(f"{type(exc).__name__}: {exc}"))
        self._mark_lost(err)
        self._fail_streams()

    def _fail_streams(self) -> None:
        streams = list(self._streams.values())
        for s in streams:
            s._fail(self.lost or ConnectionLost())

    def _on_body(self, body: bytes | bytearray) -> None:
        if self.state is not ClientState.OPEN:
            return  # aborted or closed: nobody waits for it
        env = decode_agent(_unpack(body))
        stream = self._streams.get(env.ch)
        fut = self._pending.get(env.ch)
        if fut is not None and not fut.done():
            fut.set_result(env)
        elif stream is not None and env.kind in ("stream_frame", "stream_end"):
            stream._push(env)
            if env.kind == "stream_end":
                self._streams.pop(env.ch, None)
        elif env.ch == CONTROL and env.kind == "agent_error":
            # An error the agent could not pin on a channel: it rejected one
            # of our frames as a whole.  Every in-flight request may be the one.
            err = AgentFailure(env.data)
            for f in list(self._pending.values()):
                if not f.done():
                    f.set_exception(err)
        # Anything else is a late reply to a channel we gave up on.

    def _mark_lost(self, err: ClientError) -> ClientError:
        if self.lost is None:
            self.lost = err
        if self.state is ClientState.OPEN:
            self.state = ClientState.LOST
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self.lost)
        return self.lost

    def abort(self, err: ClientError) -> None:
        """The agent is known gone although our socket is still open (the VMM saw its
        end close underneath, e.g. QEMU's virtio-serial port): fail every pending call
        and, through the reader's clean-up, every stream with `err`, now."""
        if self.state is not ClientState.OPEN:
            return
        self._mark_lost(err)
        self._fail_streams()
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        if self.closed:
            return
        self.state = ClientState.CLOSED
        for task in [self._task, *self._tasks]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._mark_lost(ConnectionLost("the connection to the agent is closed"))
        self._fail_streams()
        try:
            self._writer.close()
        except Exception:
            pass

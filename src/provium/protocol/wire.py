"""An asyncio protocol that reads frames straight into the frame decoder.

The host's reader of the agent's socket used to be an `asyncio.StreamReader`:
each recv() made a bytes object, the reader appended it to its buffer, `read()`
copied it out again, and the decoder copied it into the frame's body -- three
copies of every byte of a command's stdout, plus a task switch per read.  Under
a TCG guest the agent's port writes wait while the host drains its socket, so
that time is the guest's too.

`FrameProtocol` is an `asyncio.BufferedProtocol`: the event loop asks it for a
buffer and calls `recv_into` on it.  The buffer is the decoder's
(`FrameDecoder.get_buffer`): while a large body is under way, the unfilled rest
of that body, so its bytes land where they will be parsed and are never copied;
otherwise a reused scratch area.  Each whole body goes to the sink's `on_frame`
at once, on the loop (no task in between).  The decoder keeps every rule of the
framing: a length over the cap is refused before any of its body is held, and
an end of stream inside a frame is told apart from a clean one.

It is also the writer of the connection (`write`, `drain`, `close`, the subset
of `asyncio.StreamWriter` the client uses), with the transport's flow control:
`drain()` waits while the transport's buffer is over its high-water mark.

Written here rather than taken from a library: the frame format is provium's
own, and asyncio offers the buffered protocol but no framing for it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .decoder import FrameDecoder
from .framing import MAX_FRAME, CleanEof

# Scratch size for reads that are not into a large body: several small frames,
# or the start of a large one, in one recv.
READ_CHUNK = 256 * 1024

OnFrame = Callable[[Any], None]
OnEnd = Callable[[BaseException | None], None]


class FrameProtocol(asyncio.BufferedProtocol):
    """Frames in (to `on_frame`), bytes out (`write`/`drain`), for one connection.

    `attach(on_frame, on_end)` names the sink; bodies that arrive before it are
    held and handed over by `attach`.  `on_end(exc)` is called once: with None
    for a clean end of stream (at a frame boundary), else with the error -- a
    `FrameError` from the decoder (`FrameTooLarge`, `UnexpectedEof`), the
    exception `on_frame` raised, or the transport's `OSError`.  After an error
    the transport is closed and nothing more is read.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.decoder = FrameDecoder(limit)
        self.transport: asyncio.Transport | None = None
        self._on_frame: OnFrame | None = None
        self._on_end: OnEnd | None = None
        self._early: list[Any] = []  # bodies received before attach()
        self._ended = False
        self._end_exc: BaseException | None = None
        self._lost = False
        self._paused = False
        self._drainers: list[asyncio.Future[None]] = []

    def attach(self, on_frame: OnFrame, on_end: OnEnd) -> None:
        self._on_frame = on_frame
        self._on_end = on_end
        early, self._early = self._early, []
        try:
            for body in early:
                on_frame(body)
        except Exception as exc:
            self._end(exc)
            return
        if self._ended:
            on_end(self._end_exc)

    # ---- reading ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(READ_CHUNK)

    def buffer_updated(self, nbytes: int) -> None:
        if self._ended:
            return
        dec = self.decoder
        dec.buffer_updated(nbytes)
        try:
            while True:
                body = dec.next()  # FrameTooLarge before any of an oversized body is held
                if body is None:
                    return
                if self._on_frame is None:
                    self._early.append(body)
                else:
                    self._on_frame(body)
                if self._ended:  # the sink closed us meanwhile
                    return
        except Exception as exc:
            self._end(exc)

    def eof_received(self) -> bool:
        try:
            self.decoder.eof()  # CleanEof at a frame boundary, else UnexpectedEof
        except Exception as exc:
            self._end(None if isinstance(exc, CleanEof) else exc)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()
        if not self._ended:
            if exc is None:
                # Closed without an EOF first (our own close(), or the peer reset):
                # an end inside a frame is still an error.
                try:
                    self.decoder.eof()
                except Exception as err:
                    exc = None if isinstance(err, CleanEof) else err
            self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._end_exc = exc
        if exc is not None and self.transport is not None:
            self.transport.close()
        if self._on_end is not None:
            self._on_end(exc)

    # ---- writing ---------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    def write(self, data: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        if self._lost or self.transport is None:
            raise ConnectionResetError("connection lost")
        if not self._paused:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drainers.append(fut)
        await fut
        if self._lost:
            raise ConnectionResetError("connection lost")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

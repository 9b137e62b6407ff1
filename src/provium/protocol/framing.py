"""Length-prefixed msgpack frames: 4-byte big-endian length, then a msgpack map.

The same framing carries the host<->agent wire and the event stream.  Readers
tell a clean EOF (at a frame boundary) from one in the middle of a frame, and
refuse a length over the cap before reading (or allocating) the body.
"""

from __future__ import annotations

import struct
TYPE_CHECKING = False  # typing stays out of the agent's start (see messages.py)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

import msgpack

from ..errors import ProtocolError

MAX_FRAME = 128 * 1024 * 1024
# How much of one process's stdout (and, separately, stderr) the agent keeps for
# `wait`/`exec` and for stream readers; the rest is read and dropped, and a
# marker line saying how much was dropped ends the kept part.  Both streams of
# one result fit a frame with room to spare, and a chatty guest process cannot
# grow the agent (or the host holding the result) without bound.
OUTPUT_CAP = 16 * 1024 * 1024


def output_marker(stream: str, dropped: int) -> bytes:
    """The line that ends a capped output (agent and host write the same one)."""
    return (f"\n[provium: {dropped} more bytes of {stream} dropped; a process's output is kept "
            f"up to {OUTPUT_CAP >> 20} MiB per stream: redirect it to a file in the guest to keep it all]\n").encode()
HEADER = struct.Struct(">I")


class FrameError(ProtocolError):
    """A frame could not be read or written."""


class CleanEof(FrameError):
    """The peer closed the stream at a frame boundary."""

    def __init__(self) -> None:
        super().__init__("frame: end of stream")


class UnexpectedEof(FrameError):
    def __init__(self, bytes_read: int, expected: int) -> None:
        self.bytes_read = bytes_read
        self.expected = expected
        super().__init__(f"frame: stream ended mid-frame ({bytes_read} of {expected} bytes)")


class FrameTooLarge(FrameError):
    def __init__(self, length: int, limit: int = MAX_FRAME) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"frame: body of {length} bytes exceeds the {limit}-byte cap")


class DecodeError(FrameError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"frame: cannot decode body: {detail}")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise DecodeError(str(exc) or type(exc).__name__) from exc


def encode_frame(obj: Any, limit: int = MAX_FRAME) -> bytes:
    """Header and body as one buffer, so a single write() keeps frames whole."""
    body = pack(obj)
    if len(body) > limit:
        raise FrameTooLarge(len(body), limit)
    return HEADER.pack(len(body)) + body


def _read_exact(stream: BinaryIO, n: int, *, frame_start: bool, header_len: int = 0) -> bytes:
    chunks = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            if frame_start and got == 0:
                raise CleanEof()
            raise UnexpectedEof(header_len + got, header_len + n)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame_body(stream: BinaryIO, limit: int = MAX_FRAME) -> bytes:
    """Read one frame's raw body from a blocking binary stream."""
    header = _read_exact(stream, HEADER.size, frame_start=True)
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise FrameTooLarge(length, limit)
    return _read_exact(stream, length, frame_start=False, header_len=HEADER.size)


def read_frame(stream: BinaryIO, limit: int = MAX_FRAME) -> Any:
    return unpack(read_frame_body(stream, limit))


def skip_bytes(stream: BinaryIO, n: int) -> None:
    """Discard n bytes without holding them, to resynchronise after an oversized frame."""
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))
        if not chunk:
            raise UnexpectedEof(0, n)
        n -= len(chunk)


async def async_read_frame_body(reader, limit: int = MAX_FRAME) -> bytes:
    """asyncio.StreamReader flavour of read_frame_body."""
    import asyncio

    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise CleanEof() from exc
        raise UnexpectedEof(len(exc.partial), HEADER.size) from exc
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise FrameTooLarge(length, limit)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise UnexpectedEof(HEADER.size + len(exc.partial), HEADER.size + length) from exc

"""Length-prefixed msgpack frames: 4-byte big-endian length, then a msgpack map.

The same framing carries the host<->agent wire and the event stream.  Every
reader parses it with the one `decoder.FrameDecoder`, which tells a clean EOF
(at a frame boundary) from one in the middle of a frame, and refuses a length
over the cap before reading (or allocating) the body.
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


def unpack(body: bytes | bytearray) -> Any:
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


def read_frame_body(stream: BinaryIO, limit: int = MAX_FRAME) -> bytes | bytearray:
    """Read one frame's raw body from a blocking binary stream, and not a byte more."""
    from .decoder import FrameDecoder  # here: decoder.py imports this module

    dec = FrameDecoder(limit)
    while True:
        chunk = stream.read(dec.want())
        if not chunk:
            dec.eof()  # raises CleanEof or UnexpectedEof
        dec.feed(chunk)
        body = dec.next()  # raises FrameTooLarge before any of the body is read
        if body is not None:
            return body


def read_frame(stream: BinaryIO, limit: int = MAX_FRAME) -> Any:
    return unpack(read_frame_body(stream, limit))


async def async_read_frame_body(reader, limit: int = MAX_FRAME) -> bytes | bytearray:
    """asyncio.StreamReader flavour of read_frame_body."""
    from .decoder import FrameDecoder

    dec = FrameDecoder(limit)
    while True:
        chunk = await reader.read(dec.want())
        if not chunk:
            dec.eof()
        dec.feed(chunk)
        body = dec.next()
        if body is not None:
            return body

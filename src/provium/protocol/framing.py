"""Length-prefixed msgpack frames: 4-byte big-endian length, then a msgpack map.

The same framing carries the host<->agent wire and the event stream.  Every
reader parses it with the one `decoder.FrameDecoder`, which tells a clean EOF
(at a frame boundary) from one in the middle of a frame, and refuses a length
over the cap before reading (or allocating) the body.
"""

from __future__ import annotations

import os
import struct
TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
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
# Stream flow control: the agent may have this many bytes of one stream's
# `stream_frame` data unacknowledged; the host grants `credit` as its reader
# consumes them.  Both sides take the figure from here.  4 MiB keeps a TCG
# guest's port busy while the host's credit makes its round trip (with 1 MiB,
# a command's stdout stalled on credit every 512 KiB: 70 MiB/s against the
# port's 250); the host buffers at most this much per stream.
STREAM_WINDOW = 4 << 20


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


class Blob:
    """A large byte buffer headed for a frame (a file's contents, a command's
    output).  `encode_frame_parts` leaves it out of the packed body and hands
    it back as a part of its own, so the bytes are never copied on their way
    to the transport; anywhere else it packs as plain bin (with one copy).
    `data` may also be a list of buffers, which go out one after the other as
    one bin value (a command's output, kept as the chunks its pipe gave).
    Wire values stay `bytes` for the peer: only the sender sees a Blob."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview | list) -> None:
        self.data = data

    def parts(self) -> list:
        data = self.data
        return data if isinstance(data, list) else [data]

    def __len__(self) -> int:
        data = self.data
        return sum(len(p) for p in data) if isinstance(data, list) else len(data)

    def __bytes__(self) -> bytes:
        data = self.data
        return b"".join(data) if isinstance(data, list) else bytes(data)


# A received body at least this large may be unpacked with its large byte
# strings left in place (views.unpack_views); smaller ones are copied as usual.
VIEW_BODY_MIN = 1 << 20
# Buffers at least this large go out as a Blob where the agent produces them.
BLOB_MIN = 1 << 16
# Stands in for a Blob while the rest of the value is packed (random, so no
# value can contain it by accident).
_TOKEN = os.urandom(14)


def _pack_default(o: Any) -> Any:
    if isinstance(o, Blob):
        return bytes(o)
    raise TypeError(f"cannot serialize {type(o).__name__}")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, default=_pack_default)


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


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode_frame_parts(obj: Any, limit: int = MAX_FRAME) -> list[Any]:
    """The frame as a list of buffers to write in order (one, unless `obj` holds
    a `Blob`: then each Blob's data is a part of its own, not copied).

    msgpack packs bin as a length then the bytes, so a Blob is packed as a
    16-byte placeholder and the packed body is cut around it.
    """
    try:
        body = msgpack.packb(obj, use_bin_type=True)  # no Blob: the plain C path
    except TypeError:
        pass
    else:
        if len(body) > limit:
            raise FrameTooLarge(len(body), limit)
        return [HEADER.pack(len(body)) + body]
    blobs: list[Any] = []

    def default(o: Any) -> Any:
        if isinstance(o, Blob):
            blobs.append(o)
            return _TOKEN + len(blobs).to_bytes(2, "big")
        raise TypeError(f"cannot serialize {type(o).__name__}")

    body = msgpack.packb(obj, use_bin_type=True, default=default)
    if not blobs:
        if len(body) > limit:
            raise FrameTooLarge(len(body), limit)
        return [HEADER.pack(len(body)) + body]
    parts: list[Any] = []
    total = len(body)
    pos = 0
    for i, blob in enumerate(blobs, 1):
        mark = b"\xc4\x10" + _TOKEN + i.to_bytes(2, "big")
        at = body.index(mark, pos)
        size = len(blob)
        head = _bin_header(size)
        parts.append(body[pos:at] + head)
        parts += blob.parts()
        total += len(head) + size - len(mark)
        pos = at + len(mark)
    parts.append(body[pos:])
    if total > limit:
        raise FrameTooLarge(total, limit)
    parts[0] = HEADER.pack(total) + parts[0]
    return [p for p in parts if len(p)]


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

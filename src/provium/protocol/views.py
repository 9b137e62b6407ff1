"""Unpack a large frame body with its large bin values left in place, as views.

msgpack's `unpackb` copies every bin value into a bytes object of its own.  For
the agent that copy is a full pass over a `write_file` body (tens of MiB) into
fresh memory, which inside a TCG guest costs about as much as receiving the
body did.  `unpack_views` finds the large bin values by walking the body's
msgpack headers (a few dozen items in a request), swaps each for a small
placeholder, unpacks the rest with msgpack as usual and puts back read-only
`memoryview`s of the body in the placeholders' places: the bytes are never
copied, and the body stays alive as long as a view of it does.

The walk is written here because msgpack has no API that leaves bin values in
place; it reads headers only, never the bytes of a value.  Anything it does not
expect (bad input, a body made of very many small items) makes it give up and
leave the work to `unpack`, which copies as before and reports bad input in
its usual way.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any

import msgpack

from ..errors import ProtocolError
from .framing import VIEW_BODY_MIN, DecodeError, unpack

# Bodies smaller than VIEW_BODY_MIN are unpacked the usual way (a copy costs little).
# A bin value at least this large comes back as a view.
VIEW_BIN_MIN = 1 << 16
# The walk gives up after this many items: a request has a few dozen.
_MAX_ITEMS = 4096
# Placeholder: an ext value of this type whose data is a random token and the
# index of the view it stands for (the token is fresh per process, so no value
# on the wire can pose as one).
_EXT = 0x50
_TOKEN = os.urandom(8)

_U8 = struct.Struct(">B").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from

# Fixed-size values: first byte -> bytes after it.
_FIXED = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
          0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
# Values with a length: first byte -> (size of the length, extra bytes after it (an ext's type)).
_SIZED = {0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0), 0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1),
          0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0)}
_LEN = {1: _U8, 2: _U16, 4: _U32}


class _GiveUp(ProtocolError):
    """The walk met something it does not handle (never leaves this module)."""


def _large_bins(body: Any, min_bin: int, stop_at: int | None = None) -> Any:
    """(header start, data start, data end) of every bin value of at least
    `min_bin` bytes, in order.  Raises _GiveUp on anything unexpected.

    With `stop_at` (the length of the whole body, of which `body` is the start)
    the walk ends at the first such bin instead: its header's start when its
    data ends the body, else _GiveUp."""
    found: list[tuple[int, int, int]] = []
    end = len(body)
    pos = 0
    todo = 1  # values still to walk past
    items = 0
    try:
        while todo:
            todo -= 1
            items += 1
            if items > _MAX_ITEMS or pos >= end:
                raise _GiveUp()
            b = body[pos]
            if b <= 0x7f or b >= 0xe0:  # fixint
                pos += 1
            elif b <= 0x8f:  # fixmap
                todo += 2 * (b & 0x0f)
                pos += 1
            elif b <= 0x9f:  # fixarray
                todo += b & 0x0f
                pos += 1
            elif b <= 0xbf:  # fixstr
                pos += 1 + (b & 0x1f)
            elif b in _FIXED:
                pos += 1 + _FIXED[b]
            elif b in _SIZED:
                width, extra = _SIZED[b]
                n = _LEN[width](body, pos + 1)[0]
                start = pos + 1 + width + extra
                if b in (0xc4, 0xc5, 0xc6) and n >= min_bin:
                    if stop_at is not None:
                        if start + n != stop_at or start > end:
                            raise _GiveUp()
                        return pos
                    found.append((pos, start, start + n))
                pos = start + n
            elif b in (0xdc, 0xdd):  # array16/32
                width = 2 if b == 0xdc else 4
                todo += _LEN[width](body, pos + 1)[0]
                pos += 1 + width
            elif b in (0xde, 0xdf):  # map16/32
                width = 2 if b == 0xde else 4
                todo += 2 * _LEN[width](body, pos + 1)[0]
                pos += 1 + width
            else:  # 0xc1: never used
                raise _GiveUp()
    except (struct.error, IndexError) as exc:
        raise _GiveUp() from exc
    if pos != end or stop_at is not None:
        raise _GiveUp()
    return found


def trailing_bin(prefix: Any, total: int, min_bin: int = VIEW_BODY_MIN) -> int | None:
    """Where the header of a bin value of at least `min_bin` bytes starts, if the
    body of `total` bytes whose first bytes are `prefix` ends with that value's
    data and the header lies within `prefix`; else None.  Only headers are read:
    the caller can take the data as it arrives instead of gathering the body."""
    try:
        found = _large_bins(prefix, min_bin, stop_at=total)
    except _GiveUp:
        return None
    return found


def unpack_views(body: bytes | bytearray, min_body: int = VIEW_BODY_MIN, min_bin: int = VIEW_BIN_MIN) -> Any:
    """Like `framing.unpack`, but in a body of at least `min_body` bytes every
    bin value of at least `min_bin` bytes comes back as a read-only memoryview
    of `body` instead of a copy.  Raises DecodeError for bad input."""
    if len(body) < min_body:
        return unpack(body)
    try:
        bins = _large_bins(body, min_bin)
    except _GiveUp:
        return unpack(body)
    if not bins:
        return unpack(body)
    view = memoryview(body).toreadonly()
    pieces: list[Any] = []
    pos = 0
    for i, (head, start, stop) in enumerate(bins):
        pieces.append(view[pos:head])
        # fixext 16: 8 bytes of token, 8 of index
        pieces.append(b"\xd8" + bytes([_EXT]) + _TOKEN + i.to_bytes(8, "big"))
        pos = stop
    pieces.append(view[pos:])
    small = b"".join(pieces)

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT and len(data) == 16 and data[:8] == _TOKEN:
            _, start, stop = bins[int.from_bytes(data[8:], "big")]
            return view[start:stop]
        return msgpack.ExtType(code, data)

    try:
        return msgpack.unpackb(small, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise DecodeError(str(exc) or type(exc).__name__) from exc

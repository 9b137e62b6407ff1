"""The one length-prefixed frame parser: bytes in, whole frame bodies out (sans-IO).

Every reader of provium frames -- the agent's session loop, the host's channel
client, the dispatcher's and coordinator's event pipes, and the blocking
`read_frame` helpers -- feeds what its transport delivered into a
`FrameDecoder` and takes complete bodies out.  The decoder never reads or
waits itself, so the same parser serves a blocking port, an asyncio stream and
a non-blocking pipe under a selector, and the rules live in one place:

* layout: a 4-byte big-endian body length, then the body (`framing.HEADER`);
* the cap: a length over `limit` is reported (`FrameTooLarge`) as soon as its
  header is complete, before any of the body is held; the decoder then drops
  that body as it arrives and goes on with the next frame, so a caller that
  wants to survive a bad frame simply keeps feeding;
* the end: `eof()` tells a clean end (at a frame boundary: `CleanEof`) from one
  inside a frame (`UnexpectedEof`, with how many of how many bytes came);
* `want()` says how many bytes would complete the current header or body, so a
  blocking reader can ask for exactly that and never read past its frame.

Written here rather than taken from a library: msgpack's streaming `Unpacker`
has no length prefix and no per-frame cap, and the framing is provium's own.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Iterator

from .framing import HEADER, MAX_FRAME, CleanEof, FrameTooLarge, UnexpectedEof

_HSIZE = HEADER.size
_unpack_header = HEADER.unpack_from
# A body at least this large gets a buffer of its own, allocated once at its
# final size, instead of growing (and re-copying) the shared one.
_GATHER = 1 << 16


class FrameDecoder:
    """Feed bytes with `feed()`, take whole frame bodies with `next()` or by iterating.

    Not thread-safe: one reader owns it.
    """

    __slots__ = ("limit", "_buf", "_need", "_body", "_have", "_skip", "_skip_total", "_scratch", "_pending")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._buf = bytearray()  # bytes not yet taken (a header, a small body, or what follows)
        self._need = -1  # body length of the frame under way; -1 while reading a header
        # A large body is written into one buffer of its final size as it arrives
        # (no re-copying of a growing buffer; a reader can even read straight into it).
        self._body: bytearray | None = None
        self._have = 0  # bytes of _body filled
        self._skip = 0  # body bytes of an oversized frame still to drop
        self._skip_total = 0
        self._scratch: bytearray | None = None  # get_buffer()'s landing area for small reads
        # A large body announced but its buffer not made yet (what came of it is
        # in _buf): made by the next feed() or get_buffer(), so a reader can
        # look at its start first (large_body) and take it elsewhere.
        self._pending = False

    # ---- input -----------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes as they came from the transport (any split is fine)."""
        if not data:
            return
        if self._pending:
            self._make_body()
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            if n == len(data):
                return
            data = data[n:]
        body = self._body
        if body is not None:
            room = self._need - self._have
            n = min(room, len(data))
            body[self._have:self._have + n] = data[:n] if n < len(data) else data
            self._have += n
            if n == len(data):
                return
            data = data[n:]
        self._buf += data

    def get_buffer(self, size: int = 1 << 16) -> memoryview:
        """A writable buffer for the transport to read into (`readinto`, `recv_into`,
        `os.readv`); report how much it filled with `buffer_updated(n)`.

        While a large body is under way this is the unfilled rest of that body, so
        its bytes are read in place, never copied; otherwise a scratch area of
        `size` bytes.  The view is valid until the next call on the decoder.
        """
        if self._pending:
            self._make_body()
        if self._body is not None and self._have < self._need:
            return memoryview(self._body)[self._have:]
        scratch = self._scratch
        if scratch is None or len(scratch) < size:
            scratch = self._scratch = bytearray(size)
        return memoryview(scratch)[:size]

    def buffer_updated(self, n: int) -> None:
        """`n` bytes were written into the view the last `get_buffer()` gave."""
        if n <= 0:
            return
        if self._body is not None and self._have < self._need:
            self._have += n
            return
        assert self._scratch is not None
        with memoryview(self._scratch) as view:
            self.feed(view[:n])

    def _make_body(self) -> None:
        body = self._body = bytearray(self._need)
        held = len(self._buf)
        body[:held] = self._buf
        self._have = held
        self._buf.clear()
        self._pending = False

    def large_body(self) -> tuple[memoryview, int] | None:
        """Right after the header of a large body (before the next feed() or
        get_buffer()): (a view of the part of it received so far, its full
        length); else None.  The view is valid until the next call on the decoder."""
        if not self._pending:
            return None
        return memoryview(self._buf), self._need

    def discard_body(self) -> None:
        """The caller takes the rest of the large body that `large_body()` showed
        straight from its transport: drop it here and expect a header next."""
        if not self._pending:
            raise ValueError("discard_body: no large body is waiting")
        self._buf.clear()
        self._pending = False
        self._need = -1

    # ---- output ----------------------------------------------------------------

    def next(self) -> bytes | bytearray | None:
        """The next whole body, or None until more bytes are fed.

        Raises `FrameTooLarge` once per oversized frame (its body is then dropped
        as it arrives; call `next()` again to go on after it).  A large body comes
        back as the bytearray it was gathered in (msgpack reads either).
        """
        if self._skip:
            return None
        buf = self._buf
        if self._need < 0:
            if len(buf) < _HSIZE:
                return None
            (length,) = _unpack_header(buf)
            if length > self.limit:
                held = len(buf) - _HSIZE
                drop = min(held, length)
                del buf[:_HSIZE + drop]
                self._skip = length - drop
                self._skip_total = length
                raise FrameTooLarge(length, self.limit)
            self._need = length
            held = len(buf) - _HSIZE
            if length >= _GATHER and held < length:
                # Large and not all here yet: from now on it goes into a buffer of
                # its own, made on the next feed() or get_buffer() (_make_body).
                del buf[:_HSIZE]
                self._pending = True
                return None
            del buf[:_HSIZE]
        length = self._need
        if self._body is not None:
            if self._have < length:
                return None
            out: bytes | bytearray = self._body
            self._body = None
            self._have = 0
        else:
            if len(buf) < length:
                return None
            if len(buf) == length:
                out = bytes(buf)
                buf.clear()
            else:
                with memoryview(buf) as view:
                    out = bytes(view[:length])
                del buf[:length]
        self._need = -1
        return out

    def __iter__(self) -> Iterator[bytes | bytearray]:
        while True:
            body = self.next()
            if body is None:
                return
            yield body

    # ---- state -----------------------------------------------------------------

    def want(self) -> int:
        """How many more bytes would complete the header or body under way (>= 1)."""
        if self._skip:
            return self._skip
        if self._need < 0:
            return max(1, _HSIZE - len(self._buf))
        have = self._have if self._body is not None else len(self._buf)
        return max(1, self._need - have)

    @property
    def at_boundary(self) -> bool:
        """True when no part of a frame is held (an end of stream here is clean)."""
        return self._need < 0 and not self._skip and not self._buf

    def buffered(self) -> int:
        """Bytes held that belong to frames not yet taken."""
        return len(self._buf) + self._have + (_HSIZE if self._need >= 0 else 0)

    def eof(self) -> None:
        """The stream ended: raise `CleanEof` at a frame boundary, else `UnexpectedEof`.

        Call it after taking every whole frame (`next()` returned None).
        """
        if self.at_boundary:
            raise CleanEof()
        if self._skip:
            got = self._skip_total - self._skip
            raise UnexpectedEof(_HSIZE + got, _HSIZE + self._skip_total)
        if self._need < 0:
            raise UnexpectedEof(len(self._buf), _HSIZE)
        have = self._have if self._body is not None else len(self._buf)
        raise UnexpectedEof(_HSIZE + have, _HSIZE + self._need)

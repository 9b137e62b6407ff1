"""A large `write_file` written to its file while its frame arrives.

Gathering a 64 MiB request before writing it costs a TCG guest a pass over
64 MiB of fresh memory (the frame's buffer) on top of the file's own pages.
When the frame's header says a large body is coming and its first bytes show a
`write_file` whose data is the last thing in the body (the host puts large
values last, see `protocol.mux`), the session's reader hands the frame here:
the file is opened, the data already received is written, and the rest is read
from the port into one small reused buffer and written on, until the frame
ends.  The reply goes out as usual.

Only a regular file is written this way: its writes cannot block for long, so
the reader (who cannot read other requests meanwhile, they queue behind this
body anyway) is never stuck.  Anything else (a FIFO, a device, an open that
fails, a busy channel, another session phase) returns False before a byte of
the data is consumed, and the frame takes the usual path.
"""

from __future__ import annotations

import os
import stat as _stat

TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any

from provium.errors import ProtocolError
from provium.protocol.codec import WireError
from provium.protocol.envelope import decode_host
from provium.protocol.framing import DecodeError, unpack
from provium.protocol.core import OpResult
from provium.protocol.views import trailing_bin

from .base import os_fail
from .files import DEFAULT_FILE_PERM, _WRITE_FLAGS

# Frames smaller than this are gathered as usual.
STREAM_MIN = 4 << 20
_SEGMENT = 4096  # a virtio-serial port's buffer
_BUFFER = 1 << 18  # the reused landing area: 64 port buffers per readv()

_buffer: bytearray | None = None
# The buffer as port-sized views, made once: building the 64-view list for each
# readv() cost more emulated CPU than the call itself (20 us natively, 256 times
# for 64 MiB).  The port cannot splice (virtio_console has no splice_read in the
# guest's 6.1 kernel: EINVAL), so one copy into user space is the floor.
_segments: list[memoryview] | None = None


class Truncated(ProtocolError):  # noqa: N818  (the session's reader ends on it, nothing else sees it)
    """The stream ended inside the frame."""


def try_stream(session: Any, dec: Any, readinto: Any, readv: Any) -> bool:
    """Take over the large frame `dec` is gathering if it is a streamable
    write_file (see the module's docstring); True when it did and the frame is
    done (replied to).  Raises Truncated when the stream ends inside it."""
    peek = dec.large_body()
    if peek is None:
        return False
    prefix, total = peek
    try:
        return _try(session, dec, prefix, total, readinto, readv)
    finally:
        prefix.release()  # the decoder's buffer must not stay exported


def _try(session: Any, dec: Any, prefix: memoryview, total: int, readinto: Any, readv: Any) -> bool:
    if total < STREAM_MIN:
        return False
    head = trailing_bin(prefix, total)
    if head is None:
        return False
    try:
        env = decode_host(unpack(bytes(prefix[:head]) + b"\xc4\x00"))  # the request, its data left out
    except (DecodeError, WireError, ValueError, TypeError):
        return False
    if env.kind != "write_file" or not session.ready or session.busy(env.ch):
        return False
    op = env.data
    data_start = head + 1 + {0xc4: 1, 0xc5: 2, 0xc6: 4}[prefix[head]]  # bin 8/16/32: the length's size
    perm = DEFAULT_FILE_PERM if op.create_perm is None else op.create_perm & 0o7777
    try:
        # O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking the reader.
        fd = os.open(op.path, _WRITE_FLAGS[op.mode] | os.O_CLOEXEC | os.O_NONBLOCK, perm)
    except OSError:
        return False  # the usual path opens it again and reports (or waits) as before
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return False
    except OSError:
        os.close(fd)
        return False
    first = bytes(prefix[data_start:])  # the data already received (the decoder drops its copy)
    left = total - len(prefix)
    prefix.release()
    dec.discard_body()
    try:
        error = _pump(fd, left, readinto, readv, _write_all(fd, first, None))
    finally:
        os.close(fd)
    session.send(env.ch, "write_file_result",
                 os_fail("write_file", error, op.path) if error is not None else OpResult.success(None))
    return True


def _write_all(fd: int, data: Any, error: OSError | None) -> OSError | None:
    if error is not None:
        return error  # a write failed already: the rest of the data is only drained
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        return exc
    return None


def _pump(fd: int, left: int, readinto: Any, readv: Any, error: OSError | None) -> OSError | None:
    """Read the frame's remaining `left` bytes from the transport and write them
    to `fd` (or drop them once a write failed); the first write error, if any."""
    global _buffer, _segments
    buf = _buffer
    if buf is None:
        buf = _buffer = bytearray(_BUFFER)
    view = memoryview(buf)
    full = _segments
    if full is None:
        full = _segments = [view[i:i + _SEGMENT] for i in range(0, _BUFFER, _SEGMENT)]
    while left > 0:
        want = min(left, _BUFFER)
        if readv is not None:
            # Only ever up to the frame's end: the next frame's bytes stay in the port.
            n = readv(full if want == _BUFFER else [view[i:min(i + _SEGMENT, want)] for i in range(0, want, _SEGMENT)])
        else:
            n = readinto(view[:want])
        if not n:
            raise Truncated()
        left -= n
        error = _write_all(fd, view[:n], error)
    return error

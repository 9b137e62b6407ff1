"""One disk image as the guest and the test see it: the file plus a write-back overlay.

A real disk with a volatile write cache keeps a write in the cache until the host
(the guest kernel) flushes it, or writes it with FUA; a power cut loses what is
still cached.  `BlockStore` models that for a mediated disk: guest writes land in an
in-memory overlay of 512-byte sectors, `flush()` commits the overlay to the file in
ascending order and fdatasyncs it, a FUA write commits its own sectors at once, and
`power_cut()` drops the overlay.  An overlay over 64 MiB is committed on its own
(a real cache is bounded too), so a long unflushed write cannot exhaust memory.

Reads see the overlay over the file, so the guest and the test's `read_sectors`
always agree.  The test's own writes (`host_write`) are durable at once: they go to
the file and patch any cached sector they touch, so the view stays one view.

Synchronous file I/O on purpose: every caller runs on the session loop thread, one
request at a time, so the overlay needs no lock; reads and writes of a few hundred
KiB from the page cache cost less than a hop to a worker thread.
"""

from __future__ import annotations

import os

SECTOR = 512
OVERLAY_LIMIT = 64 << 20


class BlockStore:
    def __init__(self, path: str, *, readonly: bool = False, write_back: bool = True) -> None:
        self.path = path
        self.readonly = readonly
        # Without write-back (an unmediated disk's host view) writes go straight to the file.
        self.write_back = write_back
        self._fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        self._overlay: dict[int, bytes] = {}
        self.flushes = 0
        self.commits = 0

    # ---- view ----------------------------------------------------------------------

    def size(self) -> int:
        """The live size of the file (tracks truncate/fallocate by anyone)."""
        return os.fstat(self._fd).st_size

    def dirty_sectors(self) -> int:
        return len(self._overlay)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes at `offset`: the file under the overlay; short at the end of the file."""
        data = os.pread(self._fd, length, offset)
        if not self._overlay or not data:
            return data
        buf = bytearray(data)
        end = offset + len(buf)
        for s in range(offset // SECTOR, (end + SECTOR - 1) // SECTOR):
            cached = self._overlay.get(s)
            if cached is None:
                continue
            lo, hi = max(s * SECTOR, offset), min((s + 1) * SECTOR, end)
            buf[lo - offset:hi - offset] = cached[lo - s * SECTOR:hi - s * SECTOR]
        return bytes(buf)

    # ---- guest writes (write-back) -------------------------------------------------

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        """A guest write: cached until flushed (or committed at once with FUA)."""
        if not self.write_back:
            self._pwrite(offset, data)
            if fua:
                os.fdatasync(self._fd)
            return
        mv = memoryview(data)
        end = offset + len(mv)
        first, last = offset // SECTOR, (end + SECTOR - 1) // SECTOR
        touched = range(first, last)
        for s in touched:
            lo, hi = s * SECTOR, (s + 1) * SECTOR
            if offset <= lo and hi <= end:
                self._overlay[s] = bytes(mv[lo - offset:hi - offset])
            else:  # partial sector: merge with what the sector holds now
                cur = bytearray(self.read(lo, SECTOR).ljust(SECTOR, b"\0"))
                a, b = max(lo, offset), min(hi, end)
                cur[a - lo:b - lo] = mv[a - offset:b - offset]
                self._overlay[s] = bytes(cur)
        if fua:
            self._commit(touched)
            os.fdatasync(self._fd)
        elif len(self._overlay) * SECTOR > OVERLAY_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Commit every cached sector, in ascending order, then fdatasync."""
        self.flushes += 1
        if self._overlay:
            self._commit(sorted(self._overlay))
        if not self.readonly:
            os.fdatasync(self._fd)

    def _commit(self, sectors) -> None:
        run_start = -1
        run: list[bytes] = []
        for s in sectors:
            data = self._overlay.pop(s, None)
            if data is None:
                continue
            if run and s == run_start + len(run):
                run.append(data)
                continue
            if run:
                self._pwrite(run_start * SECTOR, b"".join(run))
            run_start, run = s, [data]
        if run:
            self._pwrite(run_start * SECTOR, b"".join(run))
        self.commits += 1

    def trim(self, offset: int, length: int) -> None:
        """Discard whole sectors in the range: cached ones are dropped and the file's
        blocks are punched out (they read back as zeros).  Partial sectors are left."""
        first = (offset + SECTOR - 1) // SECTOR
        last = (offset + length) // SECTOR
        if last <= first:
            return
        for s in [s for s in self._overlay if first <= s < last]:
            del self._overlay[s]
        try:
            _punch(self._fd, first * SECTOR, (last - first) * SECTOR)
        except OSError:
            # A file system without hole punching: write the zeros instead.
            self._pwrite(first * SECTOR, bytes((last - first) * SECTOR))

    def power_cut(self) -> int:
        """Lose every write not yet flushed; returns how many sectors were lost."""
        lost = len(self._overlay)
        self._overlay.clear()
        return lost

    # ---- the test's writes ---------------------------------------------------------

    def host_write(self, offset: int, data: bytes) -> None:
        """Durable at once; cached sectors it overlaps are patched so the view agrees."""
        self._pwrite(offset, data)
        if not self._overlay or not data:
            return
        end = offset + len(data)
        for s in range(offset // SECTOR, (end + SECTOR - 1) // SECTOR):
            cached = self._overlay.get(s)
            if cached is None:
                continue
            lo, hi = max(s * SECTOR, offset), min((s + 1) * SECTOR, end)
            cur = bytearray(cached)
            cur[lo - s * SECTOR:hi - s * SECTOR] = data[lo - offset:hi - offset]
            self._overlay[s] = bytes(cur)

    def _pwrite(self, offset: int, data: bytes) -> None:
        mv = memoryview(data)
        while mv:
            n = os.pwrite(self._fd, mv, offset)
            mv = mv[n:]
            offset += n

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_libc = None


def _punch(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE) through libc (os has no fallocate flags)."""
    global _libc
    import ctypes
    import ctypes.util

    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc = _libc
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
    rc = libc.fallocate(ctypes.c_int(fd), ctypes.c_int(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE),
                        ctypes.c_int64(offset), ctypes.c_int64(length))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

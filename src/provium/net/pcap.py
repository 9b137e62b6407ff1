"""pcap output: a classic libpcap savefile (not pcapng), as tcpdump -w writes it.

Written by hand because the format is 24 bytes of header plus 16 bytes per
record (`struct` does it); a library (dpkt, scapy) is only needed to *read*,
which the tests do with dpkt.  A `PcapSink` is fed by the switch thread and
serves two readers at once: the pcap file on disk and the Capture stream's
buffer (`read()` blocks until bytes arrive, with a timeout).
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

MAGIC_USEC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
GLOBAL_HEADER = struct.pack("<IHHiIII", MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
_REC = struct.Struct("<IIII")
MAX_BUFFERED = 64 << 20  # stream bytes kept for a reader that never reads (the file keeps all)


class PcapSink:
    def __init__(self, path: Path, clock_offset: float | None = None) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - open for the capture's whole life; close() closes it
        self._file.write(GLOBAL_HEADER)
        self._file.flush()
        # The switch stamps frames with its loop's monotonic clock; pcap wants wall time.
        self._offset = time.time() - time.monotonic() if clock_offset is None else clock_offset
        self._cond = threading.Condition()
        self._buf = bytearray(GLOBAL_HEADER)
        self._unflushed: list[bytes] = []
        self.frames = 0
        self.overflowed = 0
        self.closed = False

    def add(self, rec: bytes, now: float) -> None:
        """One record as the switch sees it (4-byte length + frame); switch thread."""
        if self.closed:
            return
        n = len(rec) - 4
        t = now + self._offset
        sec = int(t)
        self._unflushed.append(_REC.pack(sec, int((t - sec) * 1e6), n, n))
        self._unflushed.append(rec[4:])
        self.frames += 1

    def flush(self) -> None:
        if not self._unflushed or self.closed:
            return
        data = b"".join(self._unflushed)
        self._unflushed = []
        self._file.write(data)
        self._file.flush()
        with self._cond:
            if len(self._buf) + len(data) <= MAX_BUFFERED:
                self._buf += data
            else:
                self.overflowed += len(data)
            self._cond.notify_all()

    def read(self, timeout: float | None, limit: int = 64 << 10) -> bytes | None:
        """Up to `limit` bytes; b"" on timeout; None once closed and empty."""
        with self._cond:
            if not self._buf and not self.closed:
                self._cond.wait(timeout)
            if self._buf:
                out = bytes(self._buf[:limit])
                del self._buf[:limit]
                return out
            return None if self.closed else b""

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            self._file.close()
        except OSError:
            pass
        with self._cond:
            self._cond.notify_all()

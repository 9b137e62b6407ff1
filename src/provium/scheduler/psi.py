"""Host pressure (PSI): hold back new files while the host is already starved.

Linux reports in `/proc/pressure/cpu` (and `memory`) the share of recent time
some task waited for that resource: `some avg10=12.34 avg60=... total=...`.
When the 10-second average passes the threshold on any file, the dispatcher
starts no new file (those already running carry on); it never holds back the
first file, so a host that is always busy (a shared CI machine) still makes
progress.  A missing or unreadable file means "no data", never "pressured".
"""

from __future__ import annotations

import re
import time

DEFAULT_PATHS = ("/proc/pressure/cpu", "/proc/pressure/memory")
DEFAULT_THRESHOLD = 10.0  # percent, some avg10
POLL = 0.2  # seconds between reads while gated

_SOME = re.compile(r"^some\s+avg10=([0-9]+(?:\.[0-9]+)?)\b", re.MULTILINE)


def read_pressure(path: str) -> float | None:
    """The `some avg10` percentage in a PSI file, or None (missing, garbled)."""
    try:
        with open(path) as f:
            text = f.read(4096)
    except OSError:
        return None
    m = _SOME.search(text)
    return float(m.group(1)) if m else None


class PressureGate:
    """`pressured()` is true while any PSI file's some-avg10 exceeds the threshold
    (re-read at most every POLL seconds)."""

    def __init__(self, paths: tuple[str, ...] | list[str] = DEFAULT_PATHS,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        self.paths = list(paths)
        self.threshold = threshold
        self._checked = 0.0
        self._value = False
        self.last: dict[str, float | None] = {}

    def pressured(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._checked >= POLL:
            self._checked = now
            self.last = {p: read_pressure(p) for p in self.paths}
            self._value = any(v is not None and v > self.threshold for v in self.last.values())
        return self._value

"""The fault switchboard of one disk: which requests fail with EIO, and how slow they are.

One `Faults` object per disk is consulted by every request on it: the guest's
(through the NBD server, for a mediated disk) and the test's own host-side sector
I/O.  So a test that injects `eio_read` sees the guest's read fail *and* its own
`read_sectors` fail, and both stop failing after `clear()`.

Modes (combinable; injecting a mode again replaces its options):
- `eio_read` / `eio_write`: the request fails with EIO.  Optional `after=n`: the
  first n matching requests still succeed (then every later one fails); optional
  `start`/`count`: only requests touching sectors [start, start+count) fail.
- `slow`: every request waits `delay` seconds (default 50 ms) before it is served.

Plain data, no I/O and no clock: the caller sleeps and fails.  Mutated and read on
the session loop thread only (host-side I/O is run there too).
"""

from __future__ import annotations

from dataclasses import dataclass

SECTOR = 512
MODES = ("eio_read", "eio_write", "slow")
DEFAULT_SLOW = 0.050  # the reference's fixed slow-fault latency
MAX_DELAY = 3600.0


@dataclass(frozen=True)
class Fault:
    mode: str
    after: int = 0  # matching requests still allowed before failures start
    start: int | None = None  # sector range (None: every sector)
    count: int | None = None
    delay: float = DEFAULT_SLOW

    def touches(self, offset: int, length: int) -> bool:
        if self.start is None or self.count is None:
            return True
        lo, hi = self.start * SECTOR, (self.start + self.count) * SECTOR
        end = offset + max(length, 1)
        return offset < hi and end > lo

    def describe(self) -> str:
        parts = []
        if self.after:
            parts.append(f"after {self.after}")
        if self.start is not None:
            parts.append(f"sectors {self.start}..{self.start + (self.count or 0) - 1}")
        if self.mode == "slow":
            parts.append(f"{self.delay * 1000:g} ms")
        return self.mode + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class Verdict:
    delay: float = 0.0
    fail: bool = False


class Faults:
    def __init__(self) -> None:
        self._active: dict[str, Fault] = {}
        self._seen: dict[str, int] = {}  # matching requests seen per eio mode, for `after`

    def inject(self, fault: Fault) -> None:
        if fault.mode not in MODES:
            raise ValueError(f"unknown mode `{fault.mode}` (valid: {', '.join(MODES)})")
        self._active[fault.mode] = fault
        self._seen.pop(fault.mode, None)

    def clear(self) -> None:
        self._active.clear()
        self._seen.clear()

    def active(self) -> list[str]:
        """Active mode names, sorted (the reference's order)."""
        return sorted(self._active)

    def details(self) -> list[str]:
        return [self._active[m].describe() for m in self.active()]

    def check(self, kind: str, offset: int, length: int) -> Verdict:
        """What happens to one request: `kind` is "read", "write" (also trim) or "flush".

        A flush fails under `eio_write` (it is the write path), and is slowed like the rest.
        """
        slow = self._active.get("slow")
        delay = slow.delay if slow is not None else 0.0
        mode = "eio_read" if kind == "read" else "eio_write"
        f = self._active.get(mode)
        if f is None:
            return Verdict(delay, False)
        if kind != "flush" and not f.touches(offset, length):
            return Verdict(delay, False)
        seen = self._seen.get(mode, 0)
        self._seen[mode] = seen + 1
        return Verdict(delay, seen >= f.after)

    def failing_now(self, kind: str, offset: int, length: int) -> bool:
        """Whether an unconditional EIO fault for `kind` is on now: checked again after a slow
        wait and after the I/O, so a fault injected meanwhile hits the request in flight
        (the reference's re-checks).  Counted faults (`after`) are decided once, in `check`."""
        f = self._active.get("eio_read" if kind == "read" else "eio_write")
        return f is not None and f.after == 0 and f.touches(offset, length)

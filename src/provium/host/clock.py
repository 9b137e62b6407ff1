"""The guest's wall clock (CLOCK_REALTIME), read and set through the agent.

On the local backend the "guest" is the host itself, so setting or advancing
the clock is refused here (and by the agent): a test must never move the
real host's clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..protocol.messages import AdvanceClockArgs, GetTimeArgs, SetTimeArgs, SleepClockArgs
from .pynames import python_names
from .errors import ArgumentError, VmError
from .values import parse_duration, seconds_to_ns, type_name

if TYPE_CHECKING:
    from .vm import VM


@python_names
class Clock:
    def __init__(self, vm: "VM") -> None:
        self._vm = vm

    def get_ns(self) -> int:
        """Nanoseconds since the epoch (signed)."""
        return self._vm._unwrap("clock:get", self._vm._agent("get_time", GetTimeArgs())).ns

    def get(self) -> float:
        """Seconds since the epoch, as a float."""
        return self.get_ns() / 1e9

    now = get

    def _refuse_on_local(self, op: str) -> None:
        inst = self._vm.instance
        if inst is not None and getattr(inst, "backend", "") == "local":
            raise VmError(f"clock:{op}: refused on the local backend: the local agent runs on this host, so it "
                          "would change the host's real clock. Use the qemu backend to control a guest clock.")

    def set(self, seconds: Any) -> None:
        """Set the wall clock to `seconds` since the epoch (negative allowed)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ArgumentError(f"clock:set: expected a number of seconds, got {type_name(seconds)}")
        if isinstance(seconds, float) and not math.isfinite(seconds):
            raise ArgumentError(f"clock:set: value must be a finite number (got {'NaN' if seconds != seconds else 'inf'})")
        ns = seconds * 1_000_000_000 if isinstance(seconds, int) else seconds_to_ns(seconds)
        self.set_ns(max(-(2**63), min(2**63 - 1, int(ns))))

    def set_ns(self, ns: Any) -> None:
        if isinstance(ns, float) and ns.is_integer():
            ns = int(ns)
        if isinstance(ns, bool) or not isinstance(ns, int) or not -(2**63) <= ns < 2**63:
            raise ArgumentError(f"clock:set_ns: expected an integer of nanoseconds (signed 64-bit), got {ns!r}")
        n = ns
        self._vm._require("set_time")
        self._refuse_on_local("set")
        self._vm._unwrap("clock:set", self._vm._agent("set_time", SetTimeArgs(n)))

    def advance(self, duration: Any) -> None:
        """Jump the clock by a signed duration ("5s", -3600, "-1h", ...)."""
        secs = 0.0 if duration is None else parse_duration(duration, "clock:advance", signed=True)
        self._vm._require("advance_clock")
        self._refuse_on_local("advance")
        self._vm._unwrap("clock:advance", self._vm._agent("advance_clock", AdvanceClockArgs(seconds_to_ns(secs))))

    def sleep(self, duration: Any = None) -> None:
        """Block while the guest sleeps for `duration` (does not change the clock)."""
        secs = 0.0 if duration is None else parse_duration(duration, "clock:sleep duration")
        ns = seconds_to_ns(secs)
        self._vm._unwrap("clock:sleep", self._vm._agent("sleep_clock", SleepClockArgs(ns)))

    def __repr__(self) -> str:
        return f"clock(vm {self._vm.name})"

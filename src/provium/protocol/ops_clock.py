"""Wire types of the clock ops: get_time, set_time, sleep_clock, advance_clock
(imported on the first such op, see kinds.py)."""

from dataclasses import dataclass

from .codec import ANY
from .core import OpResult

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


@dataclass
class TimeOk:
    """CLOCK_REALTIME in nanoseconds since the epoch."""

    ns: int


@dataclass
class GetTimeArgs:
    """Read the guest's wall clock."""

    KIND = "get_time"
    REPLY = ("get_time_result", OpResult.of(TimeOk))


@dataclass
class SetTimeArgs:
    """Set the guest's wall clock."""

    KIND = "set_time"
    REPLY = ("set_time_result", OpResult.of(type(None)))
    ns: int


@dataclass
class SleepClockArgs:
    """Answer after this many nanoseconds."""

    KIND = "sleep_clock"
    REPLY = ("sleep_clock_result", OpResult.of(type(None)))
    ns: int


@dataclass
class AdvanceClockArgs:
    """Move the guest's wall clock by this many nanoseconds."""

    KIND = "advance_clock"
    REPLY = ("advance_clock_result", OpResult.of(type(None)))
    ns: int


OPS: "list[Any]" = [GetTimeArgs, SetTimeArgs, SleepClockArgs, AdvanceClockArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

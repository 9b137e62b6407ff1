"""Wall clock (CLOCK_REALTIME): get, set, advance, and sleeping the agent thread.

The local backend runs this agent on the host, usually as root: there, setting
the clock would change the host's own time, so set/advance are refused.
"""

from __future__ import annotations

import time

from provium.protocol.core import OpResult
from provium.protocol.ops_clock import TimeOk

from .base import BAD_REQUEST, AgentFail, os_fail

EPERM = 1
EINVAL = 22
_I64 = (1 << 63) - 1


def _refuse_on_host(ctx, op_name: str) -> OpResult | None:
    if ctx.state.local:
        return OpResult.failure(
            EPERM,
            f"{op_name}: refused: the local backend runs on the host and never changes the host "
            "clock; use a QEMU VM to test clock changes",
        )
    return None


def _set(op_name: str, ns: int) -> OpResult:
    try:
        time.clock_settime_ns(time.CLOCK_REALTIME, ns)
    except OSError as exc:
        return os_fail(op_name, exc)
    except OverflowError:
        return OpResult.failure(EINVAL, f"{op_name}: {ns} ns is out of the clock's range")
    return OpResult.success(None)


def get_time(ctx, op):
    return OpResult.success(TimeOk(time.clock_gettime_ns(time.CLOCK_REALTIME)))


def set_time(ctx, op):
    return _refuse_on_host(ctx, "set_time") or _set("set_time", op.ns)


def advance_clock(ctx, op):
    refused = _refuse_on_host(ctx, "advance_clock")
    if refused:
        return refused
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    target = max(-_I64 - 1, min(_I64, now + op.ns))  # saturate like the reference
    return _set("advance_clock", target)


def sleep_clock(ctx, op):
    if op.ns < 0:
        raise AgentFail(BAD_REQUEST, f"sleep_clock: ns must be 0 or more (got {op.ns})")
    ctx.sleep(op.ns / 1e9)  # returns early when the host cancels the request
    return OpResult.success(None)


HANDLERS = {
    "get_time": get_time, "set_time": set_time, "advance_clock": advance_clock,
    "sleep_clock": sleep_clock,
}

"""Parsers for the value conventions the Lua API shares (reference-design §26).

Durations, signals and sizes arrive from Lua or Python in several spellings;
these functions turn them into plain numbers or raise an `ArgumentError` that
says what was wrong and what would have been accepted.  The Lua layer calls the
same functions, so both APIs agree on every spelling.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any, Literal, overload

from ..typenames import plain_type_name, type_name
from .errors import ArgumentError

__all__ = ["plain_type_name", "type_name"]  # re-exported: host modules name types through here


# ---- durations -------------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
# Checked in this order, so "ms" is not read as "m" followed by junk.
_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
UNITS_HELP = "a number of seconds, or a string like `500ms`, `5s`, `2m`, `1h` (bare `5` = seconds)"
# The longest duration anything accepts (about 31 years).  Longer ones are
# refused rather than passed on: the wire's nanosecond fields, asyncio's
# deadlines and the agent's millisecond timeouts would overflow (or a wait
# would hang) long before "forever"; no limit at all is spelled nil.
MAX_DURATION = 1e9


def _fmt_num(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


@overload
def parse_duration(value: Any, what: str = ..., *, signed: bool = ..., allow_none: Literal[False] = ...) -> float: ...
@overload
def parse_duration(value: Any, what: str = ..., *, signed: bool = ..., allow_none: bool) -> float | None: ...
def parse_duration(value: Any, what: str = "duration", *, signed: bool = False,
                   allow_none: bool = False) -> float | None:
    """Seconds as a float.

    Accepts int/float seconds, `datetime.timedelta`, and strings `<n>ms|s|m|h`
    (no suffix = seconds; whitespace around is ignored; the suffix is
    case-sensitive like the reference's).  NaN, infinity and anything longer
    than `MAX_DURATION` are always refused; negatives unless `signed`.  None
    gives None when `allow_none`.  The one duration parser: Lua's `wait_until`
    and every host method use it.
    """
    if value is None:
        if allow_none:
            return None
        raise ArgumentError(f"{what}: expected a duration ({UNITS_HELP}), got nil")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ArgumentError(f"{what}: expected number|string, got {type_name(value)}")
    elif isinstance(value, str):
        text = value.strip()
        scale = 1.0
        for suffix, mult in _UNITS:
            if text.endswith(suffix):
                text, scale = text[: -len(suffix)].strip(), mult
                break
        if not _NUMBER.match(text):
            raise ArgumentError(f"{what}: cannot parse `{value}` (expected {UNITS_HELP})")
        seconds = float(text) * scale
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        if signed:
            raise ArgumentError(f"{what}: must be finite (got {_fmt_num(seconds)})")
        raise ArgumentError(f"{what}: must be a finite, non-negative number (got {_fmt_num(seconds)})")
    if seconds < 0 and not signed:
        raise ArgumentError(f"{what}: must be a finite, non-negative number (got {_fmt_num(seconds)})")
    if abs(seconds) > MAX_DURATION:
        raise ArgumentError(f"{what}: {_fmt_num(seconds)} seconds is too long (at most {MAX_DURATION:.0e} s, "
                            "about 31 years; for no limit leave it out)")
    return seconds


def duration_ms(seconds: float) -> int:
    """Whole milliseconds (truncating), but never 0 for a positive duration."""
    ms = int(seconds * 1000)
    return 1 if ms == 0 and seconds > 0 else ms


def seconds_to_ns(seconds: float) -> int:
    """Truncate toward zero and saturate to the signed 64-bit range, as the wire needs."""
    ns = seconds * 1e9
    if ns >= 2**63 - 1:
        return 2**63 - 1
    if ns <= -(2**63):
        return -(2**63)
    return int(ns)


# ---- signals ---------------------------------------------------------------------------

SIGNALS: dict[str, int] = {}
_SIGNAL_TABLE = [
    # (names, number, numeric string accepted)
    (("term", "sigterm"), 15, True),
    (("kill", "sigkill"), 9, True),
    (("int", "sigint"), 2, True),
    (("hup", "sighup"), 1, True),
    (("quit", "sigquit"), 3, True),
    (("stop", "sigstop"), 19, False),
    (("cont", "sigcont"), 18, False),
    (("usr1", "sigusr1"), 10, True),
    (("usr2", "sigusr2"), 12, True),
    (("alrm", "sigalrm"), 14, True),
    (("pipe", "sigpipe"), 13, True),
    (("chld", "sigchld"), 17, True),
    (("winch", "sigwinch"), 28, False),
]
SIGNAL_NAMES: dict[int, str] = {}
for _names, _num, _numeric in _SIGNAL_TABLE:
    for _n in _names:
        SIGNALS[_n] = _num
    if _numeric:
        SIGNALS[str(_num)] = _num
    SIGNAL_NAMES[_num] = "SIG" + _names[0].upper()
VALID_SIGNAL_NAMES = ", ".join(names[0] for names, _, _ in _SIGNAL_TABLE)


def parse_signal(value: Any, what: str = "kill", *, required: bool = False) -> int:
    """A signal number from None (SIGTERM), an int, or a case-insensitive name
    (`term`, `SIGKILL`, `usr1`, some numeric strings such as `"9"`)."""
    if value is None:
        if required:
            raise ArgumentError(f"{what}: expected integer or signal name, got nil")
        return 15
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ArgumentError(f"{what}: signal must be int or string, got {type_name(value)}")
    if isinstance(value, int):
        if not 0 <= value <= 64:
            raise ArgumentError(f"{what}: signal number {value} is out of range (0..64)")
        return value
    name = value.strip().lower()
    try:
        return SIGNALS[name]
    except KeyError:
        raise ArgumentError(
            f"{what}: unknown signal name `{name}` (valid: {VALID_SIGNAL_NAMES}, "
            "with or without a `sig` prefix, or a signal number)"
        ) from None


def signal_name(num: int) -> str:
    """`SIGKILL` for 9; `signal 33` for numbers outside the friendly table."""
    if num in SIGNAL_NAMES:
        return SIGNAL_NAMES[num]
    import signal as _signal

    try:
        return _signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ---- sizes -----------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.I)
U64_MAX = 2**64 - 1


def parse_size(value: Any, what: str = "size") -> int:
    """Bytes from an integer or a string `<int>[K|M|G|T]` (1024-based, case-insensitive;
    an optional `B`/`iB` is tolerated: `512M`, `512MiB`, `1g`)."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise ArgumentError(f"{what}: expected bytes as an integer or a size string like \"512M\", got {type_name(value)}")
    if isinstance(value, float):
        if not value.is_integer() or value < 0:
            raise ArgumentError(f"{what}: size must be a whole, non-negative number of bytes (got {_fmt_num(value)})")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ArgumentError(f"{what}: size must not be negative (got {value})")
        if value > U64_MAX:
            raise ArgumentError(f"{what}: size {value} overflows u64")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ArgumentError(
            f"{what}: cannot parse size `{value}` (expected an integer number of bytes, "
            "or digits with a K/M/G/T suffix like \"512M\"; no decimals)"
        )
    n = int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))
    if n > U64_MAX:
        raise ArgumentError(f"{what}: size `{value}` overflows u64")
    return n


def format_size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"

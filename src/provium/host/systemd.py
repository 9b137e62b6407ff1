"""Helpers for guests run by systemd (the `debian` profile): wait for a unit, read the journal.

    vm.wait_unit("nginx", timeout=60)   returns once the unit is active; a unit that
                                         fails raises UnitFailed quoting its journal
    vm.journal("nginx", lines=50)        the unit's last journal lines (None: the whole journal)

Both run in the guest through the agent, with systemd's own `systemctl` and
`journalctl`; the waiting is one guest command that polls `systemctl is-active`
(no round trip per poll).  A guest without systemd (the `linux` profile's busybox
init) gets `NoSystemd`, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import CheckFailed, GuestError
from .errors import ArgumentError, VmError
from .options import check_keys, merge_kw
from .values import parse_duration, type_name

if TYPE_CHECKING:
    from .vm import VM

DEFAULT_WAIT = 120.0  # a unit of a guest that is still booting, under emulation, on a loaded host
DEFAULT_LINES = 50
EXCERPT_LINES = 20  # journal lines quoted in a UnitFailed
MAX_LINES = 100_000
POLL = 0.2
SLACK = 30.0  # the guest command's own timeout beyond the wait: systemctl under TCG is slow

WAIT_KEYS = ("timeout",)
JOURNAL_KEYS = ("lines",)

# systemd's unit name characters (systemd.unit(5)), plus `@` instances and `*` globs are not accepted:
# the name goes into a guest command line and should name one unit.
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]{1,255}")

# Exit codes of WAIT_SCRIPT.
NO_SYSTEMD, NOT_FOUND, FAILED, TIMED_OUT = 100, 101, 102, 103

SYSTEMD_CHECK = "[ -d /run/systemd/system ] || exit 100\n"  # sd_booted(3)'s own test

WAIT_SCRIPT = SYSTEMD_CHECK + """u=$1; t=$2
[ "$(systemctl show -p LoadState --value -- "$u")" = not-found ] && exit 101
end=$(( $(date +%s) + t ))
while :; do
  s=$(systemctl is-active -- "$u")
  case $s in active) exit 0;; failed) exit 102;; esac
  [ "$(date +%s)" -ge "$end" ] && { echo "$s"; exit 103; }
  sleep {poll}
done
""".replace("{poll}", str(POLL))

JOURNAL_SCRIPT = SYSTEMD_CHECK + """n=$1; shift
exec journalctl --no-pager -q -o short-precise -n "$n" "$@"
"""


class NoSystemd(VmError, GuestError):
    """The guest is not run by systemd (e.g. the `linux` profile), so unit helpers cannot work."""


class UnitError(VmError, CheckFailed):
    """A unit did not become active: the message quotes its journal."""


class UnitFailed(UnitError):
    """The unit entered the `failed` state (its journal excerpt is in the message)."""


class UnitTimeout(UnitError):
    """The unit was not active within the timeout."""


class UnitNotFound(UnitError):
    """systemd has no such unit."""


def _unit(method: str, unit: Any) -> str:
    if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
        shown = repr(unit) if isinstance(unit, str) else type_name(unit)
        raise ArgumentError(f"{method}: unit must be a systemd unit name such as \"nginx\" or \"nginx.service\", "
                            f"got {shown}")
    return unit


def _no_systemd(vm: VM, method: str) -> NoSystemd:
    return NoSystemd(f"{method}: vm `{vm.name}` (profile `{vm.profile}`) is not run by systemd; the unit "
                     "helpers need a systemd guest such as the built-in `debian` profile")


def _sh(vm: VM, method: str, script: str, args: list[str], timeout: float):
    return vm.run(["/bin/sh", "-c", script, method, *args], {"timeout": timeout})


def wait_unit(vm: VM, unit: Any, opts: Mapping | None = None, **kw: Any) -> None:
    """Wait until `unit` is active (default timeout 120 s); raise if it fails or never does."""
    method = "vm:wait_unit"
    unit = _unit(method, unit)
    o = merge_kw(opts, kw, method) or {}
    check_keys(o, WAIT_KEYS, method)
    timeout = parse_duration(o.get("timeout"), f"{method} timeout", allow_none=True)
    timeout = DEFAULT_WAIT if timeout is None else timeout
    res = _sh(vm, method, WAIT_SCRIPT, [unit, str(max(0, int(timeout + 0.999)))], timeout + SLACK)
    code = res.exit_code
    if code == 0:
        return
    if code == NO_SYSTEMD:
        raise _no_systemd(vm, method)
    if code == NOT_FOUND:
        raise UnitNotFound(f"{method}: vm `{vm.name}` has no unit `{unit}` (is its package in the profile's "
                           "`packages`?)")
    if code == FAILED:
        raise UnitFailed(f"{method}: unit `{unit}` of vm `{vm.name}` failed{_result(vm, unit)}"
                         f"{_excerpt(vm, unit)}")
    if code == TIMED_OUT:
        state = res.stdout.decode("utf-8", "replace").strip() or "unknown"
        raise UnitTimeout(f"{method}: unit `{unit}` of vm `{vm.name}` was not active after {timeout:g}s "
                          f"(it is `{state}`){_excerpt(vm, unit)}")
    why = res.stderr.decode("utf-8", "replace").strip() or f"exit code {code}"
    if getattr(res, "timed_out", False):
        why = f"the guest command timed out after {timeout + SLACK:g}s"
    raise UnitError(f"{method}: waiting for unit `{unit}` of vm `{vm.name}` failed: {why}")


def _result(vm: VM, unit: str) -> str:
    try:
        r = vm.run(["systemctl", "show", "-p", "Result", "--value", "--", unit], {"timeout": SLACK})
    except Exception:  # noqa: BLE001 - the failure itself is what we report
        return ""
    text = r.stdout.decode("utf-8", "replace").strip()
    return f" (result: {text})" if r.exit_code == 0 and text else ""


def _excerpt(vm: VM, unit: str) -> str:
    try:
        text = read_journal(vm, "vm:wait_unit", unit, EXCERPT_LINES)
    except Exception as exc:  # noqa: BLE001 - the failure itself is what we report
        return f"\n  (its journal could not be read: {exc})"
    lines = text.rstrip("\n").splitlines()
    if not lines:
        return "\n  (its journal is empty)"
    return f"\n  last {len(lines)} lines of its journal:\n" + "\n".join("    " + ln for ln in lines)


def journal(vm: VM, unit: Any = None, opts: Mapping | None = None, **kw: Any) -> str:
    """The last `lines` (default 50) lines of `unit`'s journal, or of the whole journal
    when `unit` is nil/None, as text."""
    method = "vm:journal"
    if isinstance(unit, Mapping) and opts is None:
        unit, opts = None, unit  # vm:journal({lines = 10})
    if unit is not None:
        unit = _unit(method, unit)
    o = merge_kw(opts, kw, method) or {}
    check_keys(o, JOURNAL_KEYS, method)
    lines = o.get("lines", DEFAULT_LINES)
    if isinstance(lines, float) and lines.is_integer():
        lines = int(lines)
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
        raise ArgumentError(f"{method}: `lines` must be an integer from 1 to {MAX_LINES}, got "
                            f"{lines if isinstance(lines, (int, float)) else type_name(lines)}")
    return read_journal(vm, method, unit, lines)


def read_journal(vm: VM, method: str, unit: str | None, lines: int) -> str:
    res = _sh(vm, method, JOURNAL_SCRIPT, [str(lines), *(["-u", unit] if unit else [])], SLACK)
    if res.exit_code == NO_SYSTEMD:
        raise _no_systemd(vm, method)
    if res.exit_code != 0:
        why = res.stderr.decode("utf-8", "replace").strip() or f"exit code {res.exit_code}"
        raise UnitError(f"{method}: journalctl failed on vm `{vm.name}`: {why}")
    return res.stdout.decode("utf-8", "replace")

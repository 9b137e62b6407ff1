"""Boots a file's top level asks for, held until the runner knows a test will run.

A file usually boots its VMs at the top level (`provium:vm("web", "linux"):boot()`),
before the runner can know which of its tests the filters (`--filter`, tags,
`meta.skip`, `todo`) select: the tests are only declared by running that same top
level.  A boot costs seconds of CPU under QEMU, and a file whose tests are all
filtered out must not pay it.  So while the top level runs, `vm:boot()` and
`lab:boot()` check at once what they can (the VM's state, the options) and only
record the request; when the top level has returned, the runner boots the
requests in the order they were made if any test will run, and drops them if
none will.

Anything else the top level does with a provium object (`vm:run`, `vm:state`, a
bridge, a snapshot, a fixture, ...) first boots every request still held, so the
top level sees what it saw when boots were immediate; only a boot followed by
nothing but more declarations is held.  A boot that fails is reported at the
line that asked for it, exactly as when it was immediate.

Only the runner holds boots (`FileState.deferred.hold()`); the Python API and
the fixture builder boot at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import PositionedError, message_of

# Calls that neither need a booted VM nor can tell a held boot from a done one:
# declaring VMs and labs, asking to boot, and names.  Any other call boots what is held first.
HOLDABLE = frozenset({"vm:boot", "lab:boot", "lab:vm", "lab:lab", "lab:name", "vm:name", "vm:profile"})


@dataclass(frozen=True)
class _Request:
    where: str  # "file:line: " of the call, as Lua prefixes an error raised there
    boot: Callable[[], Any]
    vm: Any  # the VM a vm:boot() is for; None for a lab:boot()


class DeferredBoots:
    def __init__(self, fix_positions: Callable[[str], str | None]) -> None:
        self.holding = False
        self._queue: list[_Request] = []
        self._fix = fix_positions

    def hold(self) -> None:
        """From now on boots asked for are recorded, not started (the top level is about to run)."""
        self.holding = True

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def is_pending(self, vm: Any) -> bool:
        return any(r.vm is vm for r in self._queue)

    def add(self, where: str, boot: Callable[[], Any], vm: Any = None) -> None:
        self._queue.append(_Request(where, boot, vm))

    def flush(self) -> None:
        """Boot every held request in order.  The first failure drops the rest and
        raises a PositionedError at the line that asked for the failed boot."""
        while self._queue:
            req = self._queue.pop(0)
            try:
                req.boot()
            except Exception as exc:
                self._queue.clear()
                text = req.where + message_of(exc)
                raise PositionedError(self._fix(text) or text) from exc

    def release(self, *, boot: bool) -> None:
        """The top level has returned: stop holding, and boot what is held (`boot`) or drop it."""
        self.holding = False
        if boot:
            self.flush()
        else:
            self._queue.clear()

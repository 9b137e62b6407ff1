"""The VM's lifecycle, as an enum.

    created --boot--> booting --> booted <--pause/resume--> paused
       |                 |          |  \\__ agent connection lost --> dead
       |                 |          \\__ shutdown / power_button --> shutdown
       \\--shutdown--> shutdown  <----/ (launch failed: back to created)

Methods that need a state say so with `@requires(VmState.BOOTED)` (from
`provium.errors`).  The values are the strings `vm:state()` shows in Lua and
the event stream; "booting" is shown to Lua as "created" (the documented
strings predate it, and a Lua test never runs while its VM boots).
"""

from __future__ import annotations

from enum import Enum


class VmState(str, Enum):
    CREATED = "created"
    BOOTING = "booting"
    BOOTED = "booted"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value

    @property
    def public(self) -> str:
        """The string `vm:state()` returns (the spec's five)."""
        return "created" if self is VmState.BOOTING else self.value


# A guest is running: its agent state exists and a lost connection means it died.
RUNNING = (VmState.BOOTED, VmState.PAUSED)

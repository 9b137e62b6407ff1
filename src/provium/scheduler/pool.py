"""Sizing the pool: how many runner subprocesses run at once.

For now the pool is a simple count of concurrent files (slots).  Each running
file is charged an estimate: the reference's 50 MiB per-file overhead plus, on
QEMU, one default VM (512 MiB + 100 MiB VMM overhead), and one CPU.  The
number of slots is what fits both the CPU budget and the memory budget.
Claims, per-VM charging, PSI throttling and deadlock detection are later work.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from provium.events.types import ResourceAmount

MIB = 1 << 20
FILE_OVERHEAD = 50 * MIB
DEFAULT_VM_CHARGE = 512 * MIB + 100 * MIB
OVERCOMMIT_MIN, OVERCOMMIT_MAX = 0.5, 8.0
FALLBACK_MEMORY = 8 << 30
FALLBACK_CPUS = 8


def host_memory_budget() -> int:
    """80 % of MemTotal (8 GiB if /proc/meminfo can't be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 * 8 // 10
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_MEMORY


def host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or FALLBACK_CPUS
    except (AttributeError, OSError):
        return os.cpu_count() or FALLBACK_CPUS


def clamp_overcommit(f: float, *, warn=None) -> float:
    """Clamp to the sane range; tell the user when their value was changed."""
    c = min(max(f, OVERCOMMIT_MIN), OVERCOMMIT_MAX)
    if c != f:
        msg = f"provium: --cpu-overcommit {f:g} clamped to {c:g} (sane range 0.5–8.0)"
        (warn or (lambda m: print(m, file=sys.stderr)))(msg)
    return c


@dataclass
class PoolSize:
    total: ResourceAmount
    per_file: ResourceAmount
    slots: int

    def used(self, running: int) -> ResourceAmount:
        return ResourceAmount(self.per_file.memory_bytes * running, self.per_file.cpus * running)

    def available(self, running: int) -> ResourceAmount:
        u = self.used(running)
        return ResourceAmount(max(0, self.total.memory_bytes - u.memory_bytes), max(0, self.total.cpus - u.cpus))


def size_pool(*, vmm: str, memory: int | None = None, cpus: int | None = None,
              overcommit: float = 1.0, max_slots: int | None = None, warn=None) -> PoolSize:
    mem = memory if memory is not None else host_memory_budget()
    base_cpus = cpus if cpus is not None else host_cpus()
    total_cpus = max(1, round(base_cpus * clamp_overcommit(overcommit, warn=warn)))
    per_file = ResourceAmount(FILE_OVERHEAD + (DEFAULT_VM_CHARGE if vmm == "qemu" else 0), 1)
    slots = max(1, min(total_cpus, mem // per_file.memory_bytes))
    if max_slots is not None:
        slots = max(1, min(slots, max_slots))
    return PoolSize(total=ResourceAmount(mem, total_cpus), per_file=per_file, slots=slots)

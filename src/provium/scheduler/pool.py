"""The resource pool: how much memory and how many vCPUs the run may use at once.

Sizing: memory is `--mem` or 80 % of MemTotal; CPUs are `--cpus` (or the host's)
times `--cpu-overcommit` (clamped to 0.5–8), rounded, at least 1.

Charges, all drawn from the one pool the dispatcher owns:
  * a running file holds a per-file overhead for its whole life (the runner
    process): 50 MiB; on `--vmm local`, where a file's "VMs" are host
    processes and not charged, the overhead also holds one CPU, so local runs
    stay at about one file per CPU;
  * every VM boot holds its memory + 100 MiB of VMM overhead and its vCPUs
    (512 MiB / 1 vCPU when it declares none) until the VM shuts down;
  * `provium:claim{...}` holds its amount until the file ends, and the file's
    boots then draw from the claim (a hard cap), never from the pool.

`Pool` is plain bookkeeping (no I/O, no threads: the dispatcher's one thread
drives it).  A request that does not fit parks; parked requests are served in
arrival order, each as soon as it fits (a big request does not hold back a
small one behind it).  When a request parks, the pool checks for deadlock: if
every file that holds something is itself parked and nothing parked fits in
what is free, no release can ever come, so the newest request fails at once
with an explanation instead of waiting for a timeout.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field

from provium.errors import StateError
from provium.events.types import ResourceAmount

MIB = 1 << 20
GIB = 1 << 30
FILE_OVERHEAD = 50 * MIB
VM_OVERHEAD = 100 * MIB
DEFAULT_VM_MEMORY = 512 * MIB
DEFAULT_VM_CHARGE = DEFAULT_VM_MEMORY + VM_OVERHEAD
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


def fmt_amount(a: ResourceAmount) -> str:
    mem = a.memory_bytes
    if mem % GIB == 0 and mem:
        m = f"{mem // GIB} GiB"
    elif mem >= GIB:
        m = f"{mem / GIB:.1f} GiB"
    else:
        m = f"{mem / MIB:.0f} MiB" if mem % MIB == 0 else f"{mem / MIB:.1f} MiB"
    return f"{m} / {a.cpus} cpu{'s' if a.cpus != 1 else ''}"


def add(a: ResourceAmount, b: ResourceAmount) -> ResourceAmount:
    return ResourceAmount(a.memory_bytes + b.memory_bytes, a.cpus + b.cpus)


def sub(a: ResourceAmount, b: ResourceAmount) -> ResourceAmount:
    return ResourceAmount(max(0, a.memory_bytes - b.memory_bytes), max(0, a.cpus - b.cpus))


def fits(a: ResourceAmount, within: ResourceAmount) -> bool:
    """Inclusive on both axes."""
    return a.memory_bytes <= within.memory_bytes and a.cpus <= within.cpus


def total_of(amounts: list[ResourceAmount]) -> ResourceAmount:
    out = ResourceAmount(0, 0)
    for a in amounts:
        out = add(out, a)
    return out


@dataclass
class PoolSize:
    """The pool's totals and the per-file charge for this run."""

    total: ResourceAmount
    per_file: ResourceAmount
    charge_vms: bool = True  # VM boots are charged (qemu); on local they are host processes

    @property
    def slots(self) -> int:
        """How many files fit at once by their overhead alone."""
        per = self.per_file
        by_mem = self.total.memory_bytes // per.memory_bytes if per.memory_bytes else 1 << 30
        by_cpu = self.total.cpus // per.cpus if per.cpus else 1 << 30
        return max(1, min(by_mem, by_cpu))


def size_pool(*, vmm: str, memory: int | None = None, cpus: int | None = None,
              overcommit: float = 1.0, warn=None) -> PoolSize:
    mem = memory if memory is not None else host_memory_budget()
    base_cpus = cpus if cpus is not None else host_cpus()
    total_cpus = max(1, round(base_cpus * clamp_overcommit(overcommit, warn=warn)))
    charge_vms = vmm != "local"
    per_file = ResourceAmount(FILE_OVERHEAD, 0 if charge_vms else 1)
    return PoolSize(total=ResourceAmount(mem, total_cpus), per_file=per_file, charge_vms=charge_vms)


class PoolRefused(StateError):
    """A request the pool can never grant (bigger than the pool, or a deadlock)."""


@dataclass
class Request:
    id: int
    owner: int  # the file's index
    amounts: list[ResourceAmount]
    what: str  # for messages: "vm `web`", "the claim", "the file overhead"
    since: float = 0.0
    rid: int = 0  # the asker's own id for it (a runner's request id)
    claim: bool = False  # a file's claim (it becomes the file's budget when granted)

    @property
    def total(self) -> ResourceAmount:
        return total_of(self.amounts)


@dataclass
class Grant:
    request: Request
    charges: list[int]  # one charge id per amount, released one by one


@dataclass
class Pool:
    total: ResourceAmount
    _held: dict[int, tuple[int, ResourceAmount]] = field(default_factory=dict)  # charge -> (owner, amount)
    _parked: list[Request] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # ---- state -------------------------------------------------------------

    @property
    def used(self) -> ResourceAmount:
        return total_of([a for _, a in self._held.values()])

    @property
    def available(self) -> ResourceAmount:
        return sub(self.total, self.used)

    def held_by(self, owner: int) -> ResourceAmount:
        return total_of([a for o, a in self._held.values() if o == owner])

    def parked(self) -> list[Request]:
        return list(self._parked)

    def pending_count(self) -> int:
        return len(self._parked)

    # ---- requests ------------------------------------------------------------

    def new_request(self, owner: int, amounts: list[ResourceAmount], what: str, now: float = 0.0) -> Request:
        return Request(next(self._ids), owner, list(amounts), what, now)

    def request(self, req: Request) -> Grant | None:
        """Grant now, or park and return None.  Raises PoolRefused when the
        request can never be granted (larger than the pool, or deadlock)."""
        need = req.total
        if not fits(need, self.total):
            raise PoolRefused(f"{req.what} requested {fmt_amount(need)}, which exceeds the pool total "
                              f"({fmt_amount(self.total)}); raise --mem/--cpus/--cpu-overcommit or ask for less")
        if fits(need, self.available):
            return self._grant(req)
        self._parked.append(req)
        why = self._deadlock()
        if why is not None:
            self._parked.remove(req)
            raise PoolRefused(why)
        return None

    def _grant(self, req: Request) -> Grant:
        ids = []
        for a in req.amounts:
            cid = next(self._ids)
            self._held[cid] = (req.owner, a)
            ids.append(cid)
        return Grant(req, ids)

    def cancel(self, request_id: int) -> Request | None:
        for r in self._parked:
            if r.id == request_id:
                self._parked.remove(r)
                return r
        return None

    def release(self, charge: int) -> list[Grant]:
        """Give a charge back; returns the parked requests this let through."""
        if self._held.pop(charge, None) is None:
            return []
        return self._serve()

    def release_owner(self, owner: int) -> list[Grant]:
        """A file ended: drop everything it holds and every request it parked."""
        for cid in [c for c, (o, _) in self._held.items() if o == owner]:
            del self._held[cid]
        self._parked = [r for r in self._parked if r.owner != owner]
        return self._serve()

    def _serve(self) -> list[Grant]:
        out = []
        for r in list(self._parked):
            if fits(r.total, self.available):
                self._parked.remove(r)
                out.append(self._grant(r))
        return out

    def _deadlock(self) -> str | None:
        """Why no release can ever come, or None.  Holders that are not parked
        can still finish and release, so any of them means no deadlock."""
        holders = {o for o, _ in self._held.values()}
        if not holders:
            return None
        waiting = {r.owner for r in self._parked}
        if not holders <= waiting:
            return None
        free = self.available
        if any(fits(r.total, free) for r in self._parked):
            return None
        parts = ", ".join(f"{r.what} needs {fmt_amount(r.total)}" for r in self._parked)
        return (f"the pool is deadlocked: {len(holders)} file(s) hold {fmt_amount(self.used)} of "
                f"{fmt_amount(self.total)} and every one of them is waiting for more ({parts}; "
                f"{fmt_amount(free)} free). Declare each file's peak with provium:claim{{memory=..., cpus=...}} "
                "or boot its VMs together with lab:boot(), so a file gets all it needs at once")

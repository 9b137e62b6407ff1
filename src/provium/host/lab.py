"""The Lab: a named group of VMs (and later bridges) plus sub-labs.

The root lab of a test file is named `provium`; `lab.lab(name)` makes
sub-labs; the runner makes one short-lived *scope* lab per test, named
`test:<test name>`, whose lookups fall through to the file's root lab (its
`parents`) while anything it creates stays in the test and is torn down at
the test's end.  A federation sub-lab has no parents: `dc1.web` never falls
through to a sibling or to the root.

Batch operations (`boot`, `shutdown`, `pause`, `resume`) cover this lab and
its sub-labs recursively, run every member at once on the session loop, never
roll back the members that succeeded, and report every failure in one error.

Members are generic: VMs and sub-labs are member kinds, and the network and
disk packages register theirs (`register_member_kind`), so lookups, dot
access, `members()`, `include` and `remove` serve every kind alike.

Claims and barriers go through the session's pool (host/pool.py), which under
the CLI is the dispatcher's one pool for the whole run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..events.types import ResourceAmount
from .pynames import python_names
from .errors import ArgumentError, NotYetImplemented  # noqa: F401  (re-exported)
from .options import merge_kw
from .pool import DEFAULT_BARRIER_TIMEOUT, PoolError
from .values import parse_duration, parse_size, type_name

if TYPE_CHECKING:
    from .bridge import Bridge
    from .vm import VM

RESERVED_NAMES = ("vm_fixture", "lab_fixture", "pack", "unpack")


@dataclass(frozen=True)
class MemberKind:
    """One kind of thing a lab holds by name (VMs, bridges, disks, sub-labs).

    `kind` is what `lab:members()` reports and what error messages say;
    `order` sorts kinds in listings and in dot-access lookups (VMs first, sub-labs
    last).  The networks and disks packages register their kinds with
    `register_member_kind`, so the lab needs no change when they arrive.
    """

    kind: str
    # The class, or "module:Class" for one loaded lazily: the VM and bridge
    # models (and what they import) stay unloaded in a runner whose file makes
    # neither, which keeps them off the one-file start-up path (issue 13).
    cls: type | str
    order: int
    label: str  # for messages: "vm", "bridge", "sub-lab"

    def holds(self, obj: Any) -> bool:
        """Whether `obj` is of this kind."""
        if isinstance(self.cls, type):
            return isinstance(obj, self.cls)
        mod_name, _, cls_name = self.cls.partition(":")
        mod = sys.modules.get(mod_name)
        # Not loaded yet: no object of the class can exist.
        return mod is not None and isinstance(obj, getattr(mod, cls_name))


_KINDS: dict[str, MemberKind] = {}


def register_member_kind(kind: str, cls: type | str, order: int, label: str | None = None) -> MemberKind:
    """Make objects of `cls` (a class, or "module:Class") lab members of kind `kind` (idempotent)."""
    mk = MemberKind(kind, cls, order, label or kind)
    _KINDS[kind] = mk
    return mk


def member_kinds() -> list[MemberKind]:
    return sorted(_KINDS.values(), key=lambda k: k.order)


def kind_of(obj: Any) -> MemberKind | None:
    """The member kind of `obj`, or None if labs cannot hold it."""
    for mk in member_kinds():
        if mk.holds(obj):
            return mk
    return None


def _kinds_text() -> str:
    labels = [mk.label for mk in member_kinds()]
    return ", ".join(labels[:-1]) + (", or " if len(labels) > 1 else "") + labels[-1]


class LabError(ArgumentError):
    """A lab operation was refused (duplicate or reserved name, unknown member...)."""


class BatchFailed(LabError):
    def __init__(self, action: str, failures: dict[str, str]) -> None:
        self.action = action
        self.failures = failures
        body = ", ".join(f"{name}: {msg}" for name, msg in failures.items())
        super().__init__(f"batch `{action}` failed: {{{body}}}")


@dataclass
class Account:
    """What a file's labs share: its one-shot resource claim."""

    claim_memory: int | None = None
    claim_cpus: int | None = None
    pooled: bool = False  # a dispatcher's pool holds the claim (so its end is an event)

    @property
    def claimed(self) -> bool:
        return self.claim_memory is not None


def planned_spec(vm: VM) -> Any:
    """The launch spec `vm.boot()` would use now (for charging a joint boot)."""
    from .bootopts import make_spec

    return make_spec(vm.name, vm._profile, vm._opts, default_memory=vm.session.default_memory,
                     default_cpus=vm.session.default_cpus)


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise ArgumentError(f"{what}: name must be a string, got {type_name(name)}")
    if not name:
        raise ArgumentError(f"{what}: name must not be empty")
    if name in RESERVED_NAMES:
        raise LabError(f"name `{name}` is reserved for the dot-access surface (vm_fixture, lab_fixture, pack, "
                       "unpack); use lab:vm()/lab:bridge() with a different name")
    if "/" in name:
        raise ArgumentError(f"{what}: name `{name}` may not contain `/` (it separates sub-lab paths)")
    return name


@python_names
class Lab:
    def __init__(self, session: Any, name: str = "provium", *, parents: Iterable[Lab] = (),
                 account: Account | None = None,
                 vm_factory: Callable[..., VM] | None = None) -> None:
        self.session = session
        self.name = name
        self.parents: list[Lab] = list(parents)
        self.account = account if account is not None else Account()
        self._vm_factory = vm_factory or _new_vm
        # kind -> name -> member; every registered kind has its table.
        self._members: dict[str, dict[str, Any]] = {}
        # What this lab created (as opposed to included): what `close()` tears down.
        self._owned_vms: list[VM] = []
        self._owned_labs: list[Lab] = []
        self._owned: list[Any] = []  # other kinds (bridges, disks) made through `adopt`
        self._lock = threading.RLock()

    def _table(self, kind: str) -> dict[str, Any]:
        t = self._members.get(kind)
        if t is None:
            t = self._members[kind] = {}
        return t

    @property
    def _vms(self) -> dict[str, VM]:
        return self._table("vm")

    @property
    def _sub_labs(self) -> dict[str, Lab]:
        return self._table("sub_lab")

    # ---- lookups -----------------------------------------------------------------

    def _chain(self) -> list[Lab]:
        return [self, *self.parents]

    def find(self, kind: str, name: str) -> Any:
        """The member `name` of `kind` in this lab, then the parent chain; None when absent."""
        for lab in self._chain():
            m = lab._table(kind).get(name)
            if m is not None:
                return m
        return None

    def find_any(self, name: str) -> Any:
        """Dot access: a member of any kind (VM, bridge, disk, sub-lab, in that
        order), walking the parent chain for each kind; None when absent."""
        for mk in member_kinds():
            m = self.find(mk.kind, name)
            if m is not None:
                return m
        return None

    def find_vm(self, name: str) -> VM | None:
        """This lab, then the parent chain; None when absent."""
        return self.find("vm", name)

    def find_sub_lab(self, name: str) -> Lab | None:
        return self.find("sub_lab", name)

    def vm(self, name: str, profile: str | None = None, opts: Mapping[str, Any] | None = None,
           **kw: Any) -> VM:
        """With a profile, create VM `name` here (Lua's `provium:vm(name, profile, opts)`;
        boot options as `opts` or keywords, e.g. ``lab.vm("db", "linux", memory="1G")``).
        With the name alone, look it up (this lab, then the parent chain)."""
        if profile is not None or opts is not None or kw:
            if profile is None:
                raise ArgumentError(f"Lab.vm: creating vm `{name}` needs a profile (e.g. \"linux\")")
            return self.create_vm(name, profile, merge_kw(opts, kw, "Lab.vm"))
        if not isinstance(name, str):
            raise ArgumentError(f"lab:vm: name must be a string, got {type_name(name)}")
        vm = self.find_vm(name)
        if vm is None:
            have = ", ".join(self._visible_names("vm")) or "none"
            raise LabError(f"no vm named `{name}` in this lab (lab `{self.name}` has: {have})")
        return vm

    def _visible_names(self, kind: str) -> list[str]:
        names: set[str] = set()
        for lab in self._chain():
            names.update(lab._table(kind))
        return sorted(names)

    def _shadow_owner(self, name: str, kind: str) -> Lab | None:
        if kind == "lab":
            kind = "sub_lab"
        for lab in self.parents:
            if name in lab._table(kind):
                return lab
        return None

    # ---- membership ----------------------------------------------------------------

    def create_vm(self, name: str, profile: str, opts: Any = None) -> VM:
        check_name(name, "lab:vm")
        if not isinstance(profile, str):
            raise ArgumentError(f"lab:vm: profile must be a string, got {type_name(profile)}")
        with self._lock:
            if name in self._vms:
                raise LabError(f"vm name `{name}` already used in this lab")
            owner = self._shadow_owner(name, "vm")
            if owner is not None:
                raise LabError(f'provium:vm("{name}", …): name already declared at a parent scope '
                               f'(lab `{owner.name}`). Pick a different name, or use provium:vm("{name}") '
                               "to reuse the parent-scope VM.")
            vm = self._vm_factory(self.session, name, profile, opts)
            self._vms[name] = vm
            self._owned_vms.append(vm)
            return vm

    def bridge(self, name: Any, opts: Any = None, *, create_only: bool = False, **kw: Any) -> Bridge:
        """Look a bridge up (this lab, then the parent chain) or create it here.
        With `create_only` (the reference's 2-argument form) an existing name in
        this lab is an error.  Options as `opts` or keywords
        (``lab.bridge("lan", addressing=True)``); keywords imply `create_only`."""
        check_name(name, "lab:bridge")
        if kw:
            opts, create_only = merge_kw(opts, kw, "Lab.bridge"), True
        with self._lock:
            mine = self._table("bridge").get(name)
            if mine is not None:
                if create_only:
                    raise LabError(f"bridge name `{name}` already used in this lab")
                return mine
            if not create_only:
                found = self.find("bridge", name)
                if found is not None:
                    return found
            owner = self._shadow_owner(name, "bridge")
            if owner is not None:
                raise LabError(f'provium:bridge("{name}", …): name already declared at a parent scope '
                               f'(lab `{owner.name}`). Pick a different name, or use provium:bridge("{name}") '
                               "to reuse the parent-scope bridge.")
            from .bridge import Bridge

            return self.adopt(Bridge(self.session, name, opts), what="lab:bridge")

    def find_bridge(self, name: str) -> Bridge | None:
        return self.find("bridge", name)

    def adopt(self, member: Any, *, what: str | None = None) -> Any:
        """Add a member this lab *created* (a bridge, a disk...): like `include`,
        but `close()` also closes it.  For the packages that add member kinds."""
        self._add(member, what or f"lab:{self._kind(member).kind}")
        with self._lock:
            self._owned.append(member)
        return member

    def lab(self, name: str | None = None) -> Lab:
        with self._lock:
            if name is None:
                # `__lab_<N>`, N = how many sub-labs this lab has (skipping taken names).
                n = len(self._sub_labs)
                while f"__lab_{n}" in self._sub_labs:
                    n += 1
                name = f"__lab_{n}"
            check_name(name, "lab:lab")
            if name in self._sub_labs:
                raise LabError(f"sub-lab name `{name}` already used in this lab")
            owner = self._shadow_owner(name, "lab")
            if owner is not None:
                raise LabError(f'provium:lab("{name}"): sub-lab name already declared at a parent scope '
                               f"(lab `{owner.name}`). Pick a different name.")
            sub = Lab(self.session, name, account=self.account, vm_factory=self._vm_factory)
            self._sub_labs[name] = sub
            self._owned_labs.append(sub)
            return sub

    def _kind(self, member: Any) -> MemberKind:
        mk = kind_of(member)
        if mk is None:
            raise ArgumentError(f"lab:include: expected {_kinds_text()}, got {type_name(member)}")
        return mk

    def include(self, member: Any) -> None:
        """Add an existing member (VM, bridge, disk, lab...); it stays a member
        of where it was, too.  Including the same object twice is a no-op."""
        self._add(member, "lab:include")

    def _add(self, member: Any, what: str) -> None:
        mk = self._kind(member)
        name = member.name
        with self._lock:
            if isinstance(member, Lab) and (member is self or self in member._descendants()):
                raise LabError(f"{what}: lab `{member.name}` cannot contain itself")
            check_name(name, what)
            table = self._table(mk.kind)
            if name in table:
                if table[name] is member:
                    return
                raise LabError(f"{mk.label} name `{name}` already used in this lab")
            owner = self._shadow_owner(name, mk.kind)
            if owner is not None:
                raise LabError(f"{what}: {mk.label} name `{name}` already declared at a parent scope "
                               f"(lab `{owner.name}`). Pick a different name.")
            table[name] = member

    def contains_lab(self, other: Lab) -> bool:
        """`other` is this lab or one of its sub-labs (recursively)."""
        return other is self or other in self._descendants()

    def _descendants(self) -> list[Lab]:
        out: list[Lab] = []
        for sub in self._sub_labs.values():
            out.append(sub)
            out.extend(sub._descendants())
        return out

    def remove(self, member: Any) -> None:
        """Forget a member (by name or object).  Nothing is shut down.  A name
        is looked up kind by kind (VM first); an absent member is not an error."""
        with self._lock:
            if isinstance(member, str):
                for mk in member_kinds():
                    table = self._table(mk.kind)
                    if member in table:
                        del table[member]
                        return
                return
            kind = kind_of(member)
            if kind is None:
                raise ArgumentError(f"lab:remove expected a name or {_kinds_text()}, got {type_name(member)}")
            table = self._table(kind.kind)
            name = getattr(member, "name", None)
            if name is not None and table.get(name) is member:
                del table[name]

    def names(self, kind: str) -> list[str]:
        """Direct members of one kind, sorted (no parent walk, no recursion)."""
        return sorted(self._table(kind))

    def vm_names(self) -> list[str]:
        return self.names("vm")

    def bridge_names(self) -> list[str]:
        return self.names("bridge")

    def sub_lab_names(self) -> list[str]:
        return self.names("sub_lab")

    def members(self) -> list[dict[str, str]]:
        """Direct members, kind by kind (VMs, bridges, disks, sub-labs), each sorted by name."""
        return [{"kind": mk.kind, "name": n} for mk in member_kinds() for n in self.names(mk.kind)]

    def members_of(self, kind: str) -> list[Any]:
        table = self._table(kind)
        return [table[n] for n in sorted(table)]

    def vms(self) -> list[VM]:
        return self.members_of("vm")

    def sub_labs(self) -> list[Lab]:
        return self.members_of("sub_lab")

    def all_vms(self, prefix: str = "") -> list[tuple[str, VM]]:
        """Every VM of this lab and its sub-labs, as ("sub/vm" path, VM)."""
        out = [(prefix + n, vm) for n, vm in sorted(self._vms.items())]
        for n, sub in sorted(self._sub_labs.items()):
            out.extend(sub.all_vms(f"{prefix}{n}/"))
        return out

    # ---- batch lifecycle -------------------------------------------------------------

    def _batch(self, action: str, pick: Callable[[VM], bool], op: Callable[[VM], Any]) -> None:
        members = [(path, vm) for path, vm in self.all_vms() if pick(vm)]
        if not members:
            return

        import asyncio  # members exist, so the VM model (and asyncio) is loaded already

        async def one(vm: VM) -> Any:
            return await op(vm)

        async def all_of() -> list[Any]:
            return await asyncio.gather(*(one(vm) for _, vm in members), return_exceptions=True)

        results = self.session.run(all_of())
        failures = {}
        for (path, _), res in zip(members, results):
            if isinstance(res, BaseException):
                if isinstance(res, (KeyboardInterrupt, SystemExit)):
                    raise res
                failures[path] = str(res) or type(res).__name__
        if failures:
            raise BatchFailed(action, failures)

    def boot(self) -> Lab:
        """Boot every member still `created` (already running ones are left alone).

        The pool charge for all of them is taken at once, before any boots: a
        lab never holds half its VMs while it waits for room for the rest."""
        todo = [vm for _, vm in self.all_vms() if vm.state == "created"]
        if todo:
            try:
                self.session.run(self.session.pool.prepay(
                    f"lab `{self.name}` boot ({len(todo)} vm(s))", [(vm, planned_spec(vm)) for vm in todo]))
            except PoolError as exc:
                raise LabError(f"lab boot cannot reserve for its members: {exc}") from exc
        try:
            self._batch("boot", lambda vm: vm.state == "created", lambda vm: vm.aboot())
        finally:
            for vm in todo:
                if vm.state != "booted":
                    self.session.pool.drop_vm_charge(vm)
        return self

    def shutdown(self) -> None:
        self._batch("shutdown", lambda vm: vm.state != "shutdown", lambda vm: vm.ashutdown())

    def pause(self) -> None:
        self._batch("pause", lambda vm: True, lambda vm: vm.apause())

    def resume(self) -> None:
        self._batch("resume", lambda vm: True, lambda vm: vm.aresume())

    def close(self) -> None:
        """Shut down every VM this lab (or a sub-lab it made) created, ignoring
        errors (scope teardown).  Members it only included belong elsewhere and
        are left alone."""
        for vm in list(self._owned_vms):
            vm.close()
        for sub in list(self._owned_labs):
            sub.close()
        for member in reversed(self._owned):
            try:
                member.close()
            except Exception:  # noqa: BLE001 - scope teardown reaches every member
                pass

    # ---- claims ----------------------------------------------------------------------

    def claim(self, memory: Any = None, cpus: Any = None) -> None:
        """The file's one-shot resource reservation, held until the file ends.

        Under the dispatcher it waits until the pool has room, and from then on
        every boot of the file draws from the claim (a hard cap) instead of the
        pool.  Without a pool (one file run in-process) nothing is reserved, but
        a second claim is still refused."""
        mem = 0 if memory is None else parse_size(memory, "claim: memory")
        if cpus is None:
            n = 0
        elif isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus < 0:
            raise ArgumentError(f"claim: cpus expected a non-negative int, got {type_name(cpus) if not isinstance(cpus, (int, float)) else cpus}")
        else:
            n = int(cpus)
        with self._lock:
            if self.account.claimed:
                raise LabError("lab claim already held; one-shot per lab (a file makes at most one claim)")
            self.account.claim_memory, self.account.claim_cpus = mem, n
        try:
            pooled = self.session.run(self.session.pool.claim(mem, n))
        except BaseException as exc:
            self.account.claim_memory = self.account.claim_cpus = None  # nothing is held: may try again
            if isinstance(exc, PoolError):
                raise LabError(f"lab claim refused: {exc}") from exc
            raise
        self.account.pooled = pooled
        if pooled:
            self.session.emit("claim_acquired", amount=ResourceAmount(mem, n))

    def barrier(self, name: Any, count: Any, timeout: Any = None) -> tuple[bool, str | None]:
        """Wait until `count` callers arrived at barrier `name`; (True, None), or
        (False, why) on timeout (default 60 s) or when it can never be met.

        Barriers are named run-wide: under the dispatcher, callers in every test
        file running at the same time meet (each file is one caller at a time);
        without it, threads of this process meet."""
        if not isinstance(name, str):
            raise ArgumentError(f"barrier: name must be a string, got {type_name(name)}")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ArgumentError(f"barrier: count must be an integer, got {type_name(count)}")
        if count < 1:
            raise ArgumentError(f"barrier: count must be at least 1, got {count}")
        if timeout is None:
            secs = DEFAULT_BARRIER_TIMEOUT
        else:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise ArgumentError(f"barrier: timeout must be a number of seconds, got {type_name(timeout)}")
            secs = parse_duration(timeout, "barrier: timeout") or 0.0
        try:
            return self.session.run(self.session.pool.barrier(name, count, secs))
        except PoolError as exc:
            raise LabError(f"barrier `{name}`: {exc}") from exc

    # ---- later pieces ------------------------------------------------------------------


    # ---- snapshots and fixtures (host/labsnap.py, provium.fixtures) -----------------------

    def snapshot(self, directory: Any = None) -> Any:
        """Snapshot this lab and its sub-labs into `directory` (default: a new temp
        dir); returns a `LabSnapshot`."""
        from . import labsnap

        return labsnap.snapshot(self, directory)

    def restore(self, src: Any) -> dict:
        """Restore a lab snapshot (a `LabSnapshot` or a directory) into this lab;
        returns the restored VMs by "sub/vm" path."""
        from . import labsnap

        return labsnap.restore(self, src)

    def _fixtures(self) -> Any:
        from ..fixtures.builder import Fixtures

        fx = getattr(self.session, "_provium_fixtures", None)
        if fx is None:
            fx = Fixtures(self.session, self.session.config)
            self.session._provium_fixtures = fx
        return fx

    def vm_fixture(self, name: str) -> VM:
        """The cached single-VM fixture `name`, built first if needed, as a new VM here."""
        return self._fixtures().vm(name, self)

    def lab_fixture(self, name: str) -> Lab:
        """The cached lab fixture `name`, built first if needed, as a new sub-lab here."""
        return self._fixtures().lab(name, self)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __str__(self) -> str:
        return f"lab({self.name}; {len(self._vms)} vm(s))"

    __repr__ = __str__


def _new_vm(*args: Any, **kw: Any) -> VM:
    """The default VM factory: imports the VM model on the first VM made."""
    from .vm import VM

    return VM(*args, **kw)


register_member_kind("vm", "provium.host.vm:VM", 10)
register_member_kind("bridge", "provium.host.bridge:Bridge", 20)
register_member_kind("sub_lab", Lab, 100, "sub-lab")

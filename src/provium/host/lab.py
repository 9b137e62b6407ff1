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

Bridges are `host.bridge.Bridge` objects (the network layer's graph plus the
VMs); `lab:bridge(name)` looks one up through the parent chain or creates it
here.  Barriers, snapshots and fixtures are separate, later pieces: their
methods raise `NotYetImplemented` with a message saying so.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .bridge import Bridge
from .errors import ArgumentError, NotYetImplemented
from .values import parse_size, type_name
from .vm import VM

RESERVED_NAMES = ("vm_fixture", "lab_fixture", "pack", "unpack")


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

    @property
    def claimed(self) -> bool:
        return self.claim_memory is not None


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


class Lab:
    def __init__(self, session: Any, name: str = "provium", *, parents: Iterable["Lab"] = (),
                 account: Account | None = None,
                 vm_factory: Callable[..., VM] | None = None) -> None:
        self.session = session
        self.name = name
        self.parents: list[Lab] = list(parents)
        self.account = account if account is not None else Account()
        self._vm_factory = vm_factory or VM
        self._vms: dict[str, VM] = {}
        self._sub_labs: dict[str, Lab] = {}
        self._bridges: dict[str, Bridge] = {}
        self._owned_bridges: list[Bridge] = []
        # What this lab created (as opposed to included): what `close()` tears down.
        self._owned_vms: list[VM] = []
        self._owned_labs: list[Lab] = []
        self._lock = threading.RLock()

    # ---- lookups -----------------------------------------------------------------

    def _chain(self) -> list["Lab"]:
        return [self, *self.parents]

    def find_vm(self, name: str) -> VM | None:
        """This lab, then the parent chain; None when absent."""
        for lab in self._chain():
            vm = lab._vms.get(name)
            if vm is not None:
                return vm
        return None

    def find_sub_lab(self, name: str) -> "Lab | None":
        for lab in self._chain():
            sub = lab._sub_labs.get(name)
            if sub is not None:
                return sub
        return None

    def find_bridge(self, name: str) -> Bridge | None:
        for lab in self._chain():
            br = lab._bridges.get(name)
            if br is not None:
                return br
        return None

    def vm(self, name: str) -> VM:
        if not isinstance(name, str):
            raise ArgumentError(f"lab:vm: name must be a string, got {type_name(name)}")
        vm = self.find_vm(name)
        if vm is None:
            have = ", ".join(self._visible_vm_names()) or "none"
            raise LabError(f"no vm named `{name}` in this lab (lab `{self.name}` has: {have})")
        return vm

    def _visible_vm_names(self) -> list[str]:
        names: set[str] = set()
        for lab in self._chain():
            names.update(lab._vms)
        return sorted(names)

    def _shadow_owner(self, name: str, kind: str) -> "Lab | None":
        for lab in self.parents:
            table: dict = {"vm": lab._vms, "bridge": lab._bridges}.get(kind, lab._sub_labs)
            if name in table:
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

    def bridge(self, name: Any, opts: Any = None, *, create_only: bool = False) -> Bridge:
        """Look a bridge up (this lab, then the parent chain) or create it here.
        With `create_only` (the reference's 2-argument form) an existing name in
        this lab is an error."""
        check_name(name, "lab:bridge")
        with self._lock:
            if name in self._bridges:
                if create_only:
                    raise LabError(f"bridge name `{name}` already used in this lab")
                return self._bridges[name]
            if not create_only:
                found = self.find_bridge(name)
                if found is not None:
                    return found
            owner = self._shadow_owner(name, "bridge")
            if owner is not None:
                raise LabError(f'provium:bridge("{name}", …): name already declared at a parent scope '
                               f'(lab `{owner.name}`). Pick a different name, or use provium:bridge("{name}") '
                               "to reuse the parent-scope bridge.")
            br = Bridge(self.session, name, opts)
            self._bridges[name] = br
            self._owned_bridges.append(br)
            return br

    def lab(self, name: str | None = None) -> "Lab":
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

    def include(self, member: Any) -> None:
        """Add an existing VM or lab (it stays a member of where it was, too)."""
        with self._lock:
            if isinstance(member, VM):
                check_name(member.name, "lab:include")
                if member.name in self._vms:
                    if self._vms[member.name] is member:
                        return
                    raise LabError(f"vm name `{member.name}` already used in this lab")
                owner = self._shadow_owner(member.name, "vm")
                if owner is not None:
                    raise LabError(f"lab:include: vm name `{member.name}` already declared at a parent scope "
                                   f"(lab `{owner.name}`). Pick a different name.")
                self._vms[member.name] = member
            elif isinstance(member, Bridge):
                check_name(member.name, "lab:include")
                if member.name in self._bridges:
                    if self._bridges[member.name] is member:
                        return
                    raise LabError(f"bridge name `{member.name}` already used in this lab")
                owner = self._shadow_owner(member.name, "bridge")
                if owner is not None:
                    raise LabError(f"lab:include: bridge name `{member.name}` already declared at a parent scope "
                                   f"(lab `{owner.name}`). Pick a different name.")
                self._bridges[member.name] = member
            elif isinstance(member, Lab):
                if member is self or self in member._descendants():
                    raise LabError(f"lab:include: lab `{member.name}` cannot contain itself")
                check_name(member.name, "lab:include")
                if member.name in self._sub_labs:
                    if self._sub_labs[member.name] is member:
                        return
                    raise LabError(f"sub-lab name `{member.name}` already used in this lab")
                owner = self._shadow_owner(member.name, "lab")
                if owner is not None:
                    raise LabError(f"lab:include: sub-lab name `{member.name}` already declared at a parent "
                                   f"scope (lab `{owner.name}`). Pick a different name.")
                self._sub_labs[member.name] = member
            else:
                raise ArgumentError(f"lab:include: expected vm, bridge, or lab, got {type_name(member)}")

    def contains_lab(self, other: "Lab") -> bool:
        """`other` is this lab or one of its sub-labs (recursively)."""
        return other is self or other in self._descendants()

    def _descendants(self) -> list["Lab"]:
        out: list[Lab] = []
        for sub in self._sub_labs.values():
            out.append(sub)
            out.extend(sub._descendants())
        return out

    def remove(self, member: Any) -> None:
        """Forget a member (by name or object).  Nothing is shut down."""
        with self._lock:
            if isinstance(member, str):
                if member in self._vms:
                    del self._vms[member]
                elif member in self._bridges:
                    del self._bridges[member]
                elif member in self._sub_labs:
                    del self._sub_labs[member]
            elif isinstance(member, VM):
                if self._vms.get(member.name) is member:
                    del self._vms[member.name]
            elif isinstance(member, Bridge):
                if self._bridges.get(member.name) is member:
                    del self._bridges[member.name]
            elif isinstance(member, Lab):
                if self._sub_labs.get(member.name) is member:
                    del self._sub_labs[member.name]
            else:
                raise ArgumentError(f"lab:remove expected name|vm|bridge|lab, got {type_name(member)}")

    def vm_names(self) -> list[str]:
        return sorted(self._vms)

    def bridge_names(self) -> list[str]:
        return sorted(self._bridges)

    def bridges(self) -> list[Bridge]:
        return [self._bridges[n] for n in sorted(self._bridges)]

    def sub_lab_names(self) -> list[str]:
        return sorted(self._sub_labs)

    def members(self) -> list[dict[str, str]]:
        """Direct members: VMs, then bridges, then sub-labs, each sorted by name."""
        return ([{"kind": "vm", "name": n} for n in sorted(self._vms)]
                + [{"kind": "bridge", "name": n} for n in sorted(self._bridges)]
                + [{"kind": "sub_lab", "name": n} for n in sorted(self._sub_labs)])

    def vms(self) -> list[VM]:
        return [self._vms[n] for n in sorted(self._vms)]

    def sub_labs(self) -> list["Lab"]:
        return [self._sub_labs[n] for n in sorted(self._sub_labs)]

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

    def boot(self) -> "Lab":
        """Boot every member still `created` (already running ones are left alone)."""
        self._batch("boot", lambda vm: vm.state == "created", lambda vm: vm.aboot())
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
        for br in list(self._owned_bridges):
            br.close()

    # ---- claims ----------------------------------------------------------------------

    def claim(self, memory: Any = None, cpus: Any = None) -> None:
        """The file's one-shot resource reservation.  Without a scheduler pool
        wired into this process there is nothing to reserve from: the amount is
        validated and recorded, and a second claim is refused."""
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

    # ---- later pieces ------------------------------------------------------------------

    def barrier(self, *args: Any) -> Any:
        raise NotYetImplemented("lab:barrier", "in this version of provium")

    def snapshot(self, *args: Any) -> Any:
        raise NotYetImplemented("lab:snapshot (snapshots)", "in this version of provium")

    def restore(self, *args: Any) -> Any:
        raise NotYetImplemented("lab:restore (snapshots)", "in this version of provium")

    def vm_fixture(self, *args: Any) -> Any:
        raise NotYetImplemented("vm_fixture (fixtures)", "in this version of provium")

    def lab_fixture(self, *args: Any) -> Any:
        raise NotYetImplemented("lab_fixture (fixtures)", "in this version of provium")

    def __str__(self) -> str:
        return f"lab({self.name}; {len(self._vms)} vm(s))"

    __repr__ = __str__

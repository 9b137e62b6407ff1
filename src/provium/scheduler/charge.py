"""A file's whole pool charge, known before it runs: what `--executor ray` asks Ray for.

The local pool charges a file piece by piece while it runs (pool.py): the
per-file overhead for its whole life, then each VM boot (memory + VMM overhead,
vCPUs) or, when the file declares `provium:claim`, the claim instead of its
boots.  Ray places a task once, before it starts, so the task must ask for the
file's peak up front: the per-file overhead plus the claim, or plus every VM
the file declares (declared.py), each charged as the pool would charge its
boot (`host/pool.py: vm_amount`: declared, else the profile's, else the run's
default size, + 100 MiB).  On `--vmm local` VM boots are not charged (they are
host processes), so there it is the overhead (and the claim) only, as locally.

KVM: a file whose VMs will run under KVM (`--accel kvm`, or with no `--accel`
a declared VM whose profile says `accel = "kvm"`) also needs a node that has
it, which Ray knows as the custom resource `kvm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from provium.config import Profile
from provium.events.types import ResourceAmount

from .declared import DeclaredVm, declared_claim, declared_vms
from .pool import DEFAULT_VM_MEMORY, VM_OVERHEAD, PoolSize, add, fmt_amount


@dataclass(frozen=True)
class FileCharge:
    """What one file holds at its peak, and why (for messages)."""

    amount: ResourceAmount
    kvm: bool
    claim: ResourceAmount | None
    vms: tuple[DeclaredVm, ...]
    vms_charged: bool

    def describe(self) -> str:
        if self.claim is not None:
            why = f"its provium:claim of {fmt_amount(self.claim)} + the per-file overhead"
        elif self.vms and self.vms_charged:
            names = ", ".join(f"`{v.name}`" if v.name else "(a name built at run time)" for v in self.vms[:6])
            more = f" and {len(self.vms) - 6} more" if len(self.vms) > 6 else ""
            why = f"{len(self.vms)} declared VM(s) ({names}{more}) + the per-file overhead"
        else:
            why = "the per-file overhead"
        return f"{fmt_amount(self.amount)}{' and kvm' if self.kvm else ''} ({why})"


@dataclass(frozen=True)
class ChargeRules:
    """What the run knows that decides a file's charge (built once per run)."""

    pool: PoolSize
    profiles: Mapping[str, Profile]
    default_memory: int = DEFAULT_VM_MEMORY
    default_cpus: int = 1
    accel: str | None = None  # the run's --accel; None: each profile's own
    roots: tuple[str, ...] = ()  # test roots, where vm_fixture names are found

    def vm_amount(self, vm: DeclaredVm) -> ResourceAmount:
        profile = self.profiles.get(vm.profile) if vm.profile else None
        memory = vm.memory or (profile.memory if profile else None) or self.default_memory
        cpus = vm.cpus or (profile.cpus if profile else None) or self.default_cpus
        return ResourceAmount(memory + VM_OVERHEAD, cpus)

    def needs_kvm(self, vms: list[DeclaredVm]) -> bool:
        if not self.pool.charge_vms:  # --vmm local: no guest, no KVM
            return False
        if self.accel is not None:
            return self.accel == "kvm"
        return any(p is not None and p.accel == "kvm"
                   for p in (self.profiles.get(v.profile) if v.profile else None for v in vms))


def file_charge(path: str, rules: ChargeRules) -> FileCharge:
    claim = declared_claim(path)
    vms = declared_vms(path, list(rules.roots))
    amount = rules.pool.per_file
    if claim is not None:
        amount = add(amount, claim)  # boots draw from the claim, not from the pool
    elif rules.pool.charge_vms:
        for vm in vms:
            amount = add(amount, rules.vm_amount(vm))
    return FileCharge(amount=amount, kvm=rules.needs_kvm(vms), claim=claim, vms=tuple(vms),
                      vms_charged=rules.pool.charge_vms)

"""Bridges and NICs in snapshots: the "nics" VM hook and the "bridges" part of lab.json.

A guest's NICs are devices: a restore must give QEMU the same NICs, in the same
order, or the saved device state does not fit.  Each NIC gets a *new* port of
the switch (sockets do not survive a process), so:

* `vm:snapshot` stores the bridge names of the VM's NICs (VM hook "nics");
  `vm:restore` checks the VM is attached to bridges of those names and opens
  fresh ports for them (a restore in place — `reset_between_tests` — closes the
  old ports first);
* `lab:snapshot` writes, per bridge of the lab tree, its whole graph (members,
  partitions, isolation, impairments, routes, uplink intent, seed, addressing)
  and which VMs were attached by handle; `lab:restore` recreates the bridges
  with that state before the VMs start, attaches each restored VM to its
  bridges and opens its ports, so the guests find their network as they left it.
  Frames in flight (queued for latency) are not saved.

Open captures block snapshots through the VMs' registries (a capture registers
as an open stream of every VM it watches), so this part adds no blockers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..net.graph import Impairment
from ..vmm.base import VmSpec
from . import labsnap
from .bridge import Bridge, after_shutdown, nets_of, prepare_boot
from .registry import ResourceMeta
from .snapshot import SnapshotError, register_vm_hook

if TYPE_CHECKING:
    from .lab import Lab
    from .vm import VM


class NicHook:
    """Per-VM: the bridges (names, in guest order) the saved guest had NICs on."""

    def save(self, vm: "VM", snapshot_path: Path) -> Any:
        live = nets_of(vm).live
        hot = sorted(att.bridge.name for att in live.values() if att.hotplugged)
        if hot:
            raise SnapshotError(f"vm:snapshot() failed for `{vm.name}`: its NIC on bridge(s) {', '.join(hot)} was "
                                "hot-plugged, and snapshots of hot-plugged NICs are not finished yet (attach the "
                                "bridge before vm:boot())")
        names = [br.name for br in nets_of(vm).ordered() if id(br) in live]
        return names or None

    def restore(self, vm: "VM", data: Any, spec: VmSpec, snapshot_path: Path) -> VmSpec:
        wanted = [str(n) for n in data] if isinstance(data, list) else []
        have = [br.name for br in nets_of(vm).ordered()]
        if not have and getattr(vm.session, "_net_lab_restore", None):
            return spec  # a lab restore attaches the VM in its vm_spec step
        if have != wanted:
            raise SnapshotError(
                f"vm:restore failed for `{vm.name}`: the snapshot has NICs on bridges [{', '.join(wanted)}] "
                f"but the VM is attached to [{', '.join(have)}]; attach it to the same bridges "
                "(bridge:attach) before restoring")
        after_shutdown(vm)  # a restore in place: the old guest's ports go
        return replace(spec, nics=prepare_boot(vm))


def _bridges_of(lab: "Lab", prefix: str = "") -> list[tuple[str, Bridge]]:
    table = lab._table("bridge")
    out = [(prefix, table[n]) for n in sorted(table)]
    for sub in lab.sub_labs():
        out.extend(_bridges_of(sub, f"{prefix}{sub.name}/"))
    return out


class BridgesPart:
    key = "bridges"

    def blockers(self, lab: "Lab") -> list[ResourceMeta]:
        return []

    def save(self, lab: "Lab", snap_dir: Path, vms: dict[str, "VM"]) -> Any:
        path_of = {id(vm): p for p, vm in vms.items()}
        out = []
        for prefix, br in _bridges_of(lab):
            rec = br.graph.record()
            rec["lab"] = prefix.rstrip("/")
            rec["vm_members"] = sorted(path_of[id(vm)] for vm in br._vms.values() if id(vm) in path_of)
            rec["subnet"] = str(br.subnet) if br.subnet is not None else None
            rec["addresses"] = dict(br._addresses)
            rec["uplink_ports"] = {str(g): h for g, h in br.uplink_forwards().items()}
            out.append(rec)
        return out

    def before_vms(self, lab: "Lab", data: Any, snap_dir: Path) -> None:
        lab.session._net_lab_restore = getattr(lab.session, "_net_lab_restore", 0) + 1
        for rec in data or []:
            here = lab
            for s in [x for x in str(rec.get("lab") or "").split("/") if x]:
                here = here._sub_labs.get(s) or here.lab(s)
            opts: dict[str, Any] = {"seed": int(rec.get("seed") or 0)}
            if rec.get("subnet"):
                opts["subnet"] = rec["subnet"]
            br = here._table("bridge").get(rec["name"]) or here.bridge(rec["name"], opts, create_only=True)
            _apply(br, rec)

    def vm_spec(self, lab: "Lab", data: Any, vm_path: str, spec: VmSpec) -> VmSpec:
        mine = [rec for rec in data or [] if vm_path in (rec.get("vm_members") or [])]
        if not mine:
            return spec
        vm = dict(lab.all_vms()).get(vm_path)
        if vm is None:
            return spec
        for rec in mine:
            here = lab
            for s in [x for x in str(rec.get("lab") or "").split("/") if x]:
                here = here._sub_labs[s]
            here._table("bridge")[rec["name"]].attach(vm)
        after_shutdown(vm)
        return replace(spec, nics=prepare_boot(vm))

    def after_vms(self, lab: "Lab", data: Any, snap_dir: Path, vms: dict[str, "VM"]) -> None:
        n = getattr(lab.session, "_net_lab_restore", 0)
        if n:
            lab.session._net_lab_restore = n - 1


def _apply(br: Bridge, rec: dict) -> None:
    """Put a recorded graph onto a bridge (members by name first: directional rules need them)."""
    g = br.graph
    g.attach([str(m) for m in rec.get("members") or []])
    for name, addr in (rec.get("addresses") or {}).items():
        br._addresses.setdefault(str(name), str(addr))
    g.set_whole(latency_ms=float(rec.get("latency_ms") or 0), jitter_ms=float(rec.get("jitter_ms") or 0),
                drop_pct=float(rec.get("drop_rate_pct") or 0), bandwidth_bps=int(rec.get("bandwidth_bps") or 0))
    for a, b in rec.get("partitions") or []:
        g.partition(str(a), str(b))
    for a, b in rec.get("directional_partitions") or []:
        g.partition_directional(str(a), str(b))
    for d in rec.get("directional_impairments") or []:
        imp = Impairment(float(d.get("latency_ms") or 0), float(d.get("jitter_ms") or 0),
                         float(d.get("drop_rate_pct") or 0), int(d.get("bandwidth_bps") or 0))
        g.set_directional(str(d["from"]), str(d["to"]), "lab:restore", latency_ms=imp.latency_ms,
                          jitter_ms=imp.jitter_ms, drop_pct=imp.drop_pct, bandwidth_bps=imp.bandwidth_bps)
    for name in rec.get("isolated") or []:
        g.isolate(str(name))
    g.route([str(r) for r in rec.get("routes") or []])
    if rec.get("fully_partitioned"):
        g.partition_all()
    if rec.get("uplink_enabled") and rec.get("uplink_ports"):
        br.enable_uplink({"ports": {int(k): int(v) for k, v in rec["uplink_ports"].items()}})


register_vm_hook("nics", NicHook())
labsnap.register_lab_part(BridgesPart())

"""Lab snapshots: every VM of a lab tree plus `lab.json`, and the extension point
through which other lab member kinds (bridges, disks) add their part.

A lab snapshot is a directory:

    lab.json             {"format": 1, "vms": [{"vm_name": "sub/vm", "profile": ...,
                          "snapshot_path": "sub_vm.snap"}], "bridges": [...], <part>: ...}
    <vm path, / -> _>.snap   one single-VM snapshot per VM (host/snapshot.py)
    ...                  whatever files a part writes

`snapshot_path` is stored relative to the directory, so the directory can be
moved (into the fixture cache, say); absolute paths written by older tools are
accepted too.

Extension point: a member kind implements `LabPart` and calls
`register_lab_part(part)` at import time.  `part.key` names its entry in
lab.json (e.g. "bridges"; "bridges" is always present, `[]` when no part fills
it, for the reference's schema).  The snapshot calls, in order:
`blockers(lab)` (resources that must block a snapshot, e.g. active captures,
each a `ResourceMeta` with its creation site), then after the VMs are saved
`save(lab, snap_dir, vms)` whose JSON-able result goes to lab.json[key] (it
may write its own files into `snap_dir`).  Restore calls `before_vms(lab, data,
snap_dir)` (create bridges ...), `vm_spec(lab, data, vm_path, spec)` for each
VM before it is launched (add NICs/disks to its VmSpec), then
`after_vms(lab, data, snap_dir, vms)` (re-apply rules, impairments, ...).
`vms` maps "sub/vm" paths to VM objects.  Parts run in registration order.
Per-VM state that travels inside a single VM's file goes through
`host.snapshot.register_vm_hook` instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StateError
from ..fsutil import atomic_write
from ..log import lab_logger, timed
from ..vmm.base import VmSpec
from .pynames import python_names
from . import snapshot as snap_mod
from .errors import ArgumentError, WrongState
from .registry import ResourceMeta
from .values import type_name

if TYPE_CHECKING:
    from .lab import Lab
    from .vm import VM

LAB_JSON = "lab.json"
LAB_FORMAT = 1


class LabSnapshotError(StateError):
    """A lab snapshot or restore was refused or failed."""


class LabPart(Protocol):
    key: str

    def blockers(self, lab: Lab) -> list[ResourceMeta]: ...

    def save(self, lab: Lab, snap_dir: Path, vms: dict[str, VM]) -> Any: ...

    def before_vms(self, lab: Lab, data: Any, snap_dir: Path) -> None: ...

    def vm_spec(self, lab: Lab, data: Any, vm_path: str, spec: VmSpec) -> VmSpec: ...

    def after_vms(self, lab: Lab, data: Any, snap_dir: Path, vms: dict[str, VM]) -> None: ...


_PARTS: list[LabPart] = []


def register_lab_part(part: LabPart) -> None:
    """Add a member kind's part to every lab snapshot (see the module docstring)."""
    _PARTS[:] = [p for p in _PARTS if p.key != part.key] + [part]


@python_names
class LabSnapshot:
    """A lab snapshot directory: a thin handle over its path."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._path = os.path.abspath(os.fspath(path))

    @property
    def path(self) -> str:
        return self._path

    def size(self) -> int:
        """Sum of the sizes of the directory's direct entries; 0 if unreadable."""
        total = 0
        try:
            with os.scandir(self._path) as it:
                for e in it:
                    try:
                        total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except OSError:
            return 0
        return total

    def delete(self) -> None:
        try:
            shutil.rmtree(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LabSnapshotError(f"lab snapshot `{self._path}`: delete failed: {exc.strerror or exc}") from None

    def __str__(self) -> str:
        return f"lab_snapshot({self._path})"

    __repr__ = __str__


def file_name(vm_path: str) -> str:
    return vm_path.replace("/", "_") + ".snap"


def _stream_blockers(lab: Lab) -> list[ResourceMeta]:
    out: list[ResourceMeta] = []
    for _, vm in lab.all_vms():
        out.extend(vm.open_resources()[1])
    for part in _PARTS:
        out.extend(part.blockers(lab))
    return out


def check_streams(lab: Lab, what: str = "lab:snapshot") -> None:
    blockers = _stream_blockers(lab)
    if blockers:
        lines = [f"{what}: {len(blockers)} stream(s) still open"]
        lines += [f"  - {m.describe()}" for m in blockers]
        lines.append("  Close streams before snapshotting.")
        raise LabSnapshotError("\n".join(lines))


def snapshot(lab: Lab, directory: Any = None) -> LabSnapshot:
    """Snapshot every VM of `lab` and its sub-labs into `directory` (default: a new
    temp dir, kept).  VMs are paused together, saved in parallel, and resumed."""
    if directory is not None and not isinstance(directory, (str, Path)):
        raise ArgumentError(f"lab:snapshot: dir must be a string, got {type_name(directory)}")
    check_streams(lab)
    vms = lab.all_vms()
    for path, vm in vms:
        if vm.state not in ("booted", "paused"):
            raise WrongState(path, vm.state, "snapshot")
    for path, vm in vms:
        snap_mod.check_quiescent(vm)
    if directory is None:
        d = Path(tempfile.mkdtemp(prefix=f"provium-labsnap-{os.getpid()}-"))
    else:
        d = Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
        d.mkdir(parents=True, exist_ok=True)
    with timed(lab_logger(lab.name), f"snapshot of {len(vms)} VM(s) to {d}"):
        lab.session.run(_save_all(vms, d))
        by_path = dict(vms)
        doc: dict[str, Any] = {
            "format": LAB_FORMAT,
            "vms": [{"vm_name": path, "profile": vm.profile, "snapshot_path": file_name(path)} for path, vm in vms],
            "bridges": [],
        }
        for part in _PARTS:
            doc[part.key] = part.save(lab, d, by_path)
        atomic_write(d / LAB_JSON, json.dumps(doc, indent=2) + "\n")
    return LabSnapshot(d)


async def _save_all(vms: list[tuple[str, VM]], d: Path) -> None:
    # Pause everyone first, so the saved guests are one consistent moment of the lab.
    running = [vm for _, vm in vms if vm.state == "booted"]
    await asyncio.gather(*(vm.instance.pause() for vm in running), return_exceptions=True)
    try:
        results = await asyncio.gather(*(snap_mod.asnapshot(vm, d / file_name(path)) for path, vm in vms),
                                       return_exceptions=True)
    finally:
        await asyncio.gather(*(vm.instance.resume() for vm in running if vm.state == "booted"),
                             return_exceptions=True)
    failures = [(path, r) for (path, _), r in zip(vms, results) if isinstance(r, BaseException)]
    if failures:
        for _, r in failures:
            if not isinstance(r, Exception):
                raise r
        body = "; ".join(f"{path}: {r}" for path, r in failures)
        raise LabSnapshotError(f"lab:snapshot failed: {body}")


def read_lab_json(src: Any) -> tuple[Path, dict]:
    if isinstance(src, LabSnapshot):
        d = Path(src.path)
    elif isinstance(src, (str, Path)):
        d = Path(os.path.abspath(os.path.expanduser(os.fspath(src))))
    else:
        raise ArgumentError(f"lab:restore: expected snapshot|string, got {type_name(src)}")
    f = d / LAB_JSON
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise LabSnapshotError(f"lab:restore: `{f}` not found (not a lab snapshot directory)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabSnapshotError(f"lab:restore: cannot read `{f}`: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("vms"), list):
        raise LabSnapshotError(f"lab:restore: `{f}` has no `vms` list (not a provium lab snapshot)")
    fmt = doc.get("format", LAB_FORMAT)
    if fmt != LAB_FORMAT:
        raise LabSnapshotError(f"lab:restore: `{f}` has format {fmt}; this provium reads format {LAB_FORMAT}")
    for i, e in enumerate(doc["vms"]):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("vm_name", "profile",
                                                                                  "snapshot_path")):
            raise LabSnapshotError(f"lab:restore: `{f}`: vms[{i}] needs string vm_name, profile, snapshot_path")
    return d, doc


def _target(lab: Lab, vm_path: str) -> tuple[Lab, str]:
    *subs, name = vm_path.split("/")
    here = lab
    for s in subs:
        here = here._sub_labs.get(s) or here.lab(s)
    return here, name


def restore(lab: Lab, src: Any) -> dict[str, VM]:
    """Restore a lab snapshot into `lab` (additive: nothing there is removed).
    Returns the restored VMs by "sub/vm" path."""
    d, doc = read_lab_json(src)
    entries = doc["vms"]
    # Pre-flight: refuse before anything starts.
    for e in entries:
        *subs, name = e["vm_name"].split("/")
        here: Lab | None = lab
        for s in subs:
            here = here._sub_labs.get(s) if here is not None else None
        if here is not None and name in here._vms:
            raise LabSnapshotError(f"lab:restore: vm name `{name}` already used in lab `{here.name}`")
    with timed(lab_logger(lab.name), f"restore of {len(entries)} VM(s) from {d}"):
        return _restore(lab, d, doc)


def _restore(lab: Lab, d: Path, doc: dict) -> dict[str, VM]:
    entries = doc["vms"]
    for part in _PARTS:
        if part.key in doc:
            part.before_vms(lab, doc[part.key], d)
    vms: dict[str, VM] = {}
    for e in entries:
        owner, name = _target(lab, e["vm_name"])
        vms[e["vm_name"]] = owner.create_vm(name, e["profile"])

    def spec_hook(vm_path: str):
        def hook(spec: VmSpec) -> VmSpec:
            for part in _PARTS:
                if part.key in doc:
                    spec = part.vm_spec(lab, doc[part.key], vm_path, spec)
            return spec
        return hook

    async def all_of() -> list[Any]:
        return await asyncio.gather(*(
            snap_mod.arestore(vms[e["vm_name"]], _snap_path(d, e["snapshot_path"]), spec_hook=spec_hook(e["vm_name"]))
            for e in entries), return_exceptions=True)

    results = lab.session.run(all_of())
    failures = [(e["vm_name"], r) for e, r in zip(entries, results) if isinstance(r, BaseException)]
    if failures:
        for _, r in failures:
            if not isinstance(r, Exception):
                raise r
        raise LabSnapshotError("lab:restore failed: " + "; ".join(f"{p}: {r}" for p, r in failures))
    for part in _PARTS:
        if part.key in doc:
            part.after_vms(lab, doc[part.key], d, vms)
    return vms


def restore_in_place(lab: Lab, src: Any) -> None:
    """Put every VM recorded in the snapshot back to its saved state, keeping the VM
    objects (reset_between_tests).  VMs the snapshot does not know are left alone."""
    d, doc = read_lab_json(src)
    current = dict(lab.all_vms())
    pairs = [(current[e["vm_name"]], _snap_path(d, e["snapshot_path"]))
             for e in doc["vms"] if e["vm_name"] in current]
    with timed(lab_logger(lab.name), f"restore in place of {len(pairs)} VM(s) from {d}"):
        _restore_in_place(lab, d, doc, current, pairs)


def _restore_in_place(lab: Lab, d: Path, doc: dict, current: dict[str, VM], pairs: list[tuple[VM, Path]]) -> None:
    async def all_of() -> list[Any]:
        return await asyncio.gather(*(snap_mod.arestore(vm, p, reset=True) for vm, p in pairs),
                                    return_exceptions=True)

    results = lab.session.run(all_of())
    failures = [(vm.name, r) for (vm, _), r in zip(pairs, results) if isinstance(r, BaseException)]
    if failures:
        raise LabSnapshotError("restore failed: " + "; ".join(f"{n}: {r}" for n, r in failures))
    for part in _PARTS:
        if part.key in doc:
            part.after_vms(lab, doc[part.key], d, {p: current[p] for p in current})


def prestart_in_place(lab: Lab, src: Any) -> None:
    """Hint the VMM that `restore_in_place(lab, src)` comes next (it may start the
    restoring VMMs ahead, in the background).  Never raises."""
    try:
        d, doc = read_lab_json(src)
    except LabSnapshotError:
        return
    current = dict(lab.all_vms())
    for e in doc["vms"]:
        vm = current.get(e["vm_name"])
        if vm is None:
            continue
        try:
            # Owned by the session (cancelled before its backend closes), never awaited here.
            lab.session.background_threadsafe(lab.session.vmm.prestart(vm.boot_spec(),
                                                                       _snap_path(d, e["snapshot_path"])))
        except Exception:  # noqa: BLE001, S110 - a hint only
            pass


def _snap_path(d: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else d / q

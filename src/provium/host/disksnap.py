"""Disks in VM snapshots: the `disks` part of a snapshot file (`host/snapshot.py` hook).

At snapshot time every boot disk's image is copied (holes kept) next to the snapshot
file, into `<snapshot>.disks/`, and the file's metadata lists them in command-line
order.  At restore time each saved image is copied again into the VM's own disk
directory, so one snapshot restores any number of times and never changes; mediated
disks get a fresh NBD server.  `Snapshot.delete()` removes the `.disks` directory too.

The copy is taken while the guest is stopped (`host/snapshot.py` stops it before any
hook runs), so the disks and the memory saved after them are of the same moment.  Writes the
guest never flushed are kept in the copy (a restored guest has them in its memory too),
so a restored disk starts with nothing left to lose in a power cut.

Not supported yet (clear errors): hot-plugged disks and detached boot disks at the
time of the snapshot, since a restored QEMU starts with the boot disks only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..disk import image as disk_image
from ..vmm.base import DiskSpec, VmSpec
from . import rootdisk
from .disk import DiskError
from .snapshot import SnapshotError, register_vm_hook

if TYPE_CHECKING:
    from .vm import VM

VERSION = 1


def disks_dir(snapshot_path: Path) -> Path:
    return Path(str(snapshot_path) + ".disks")


class DiskSnapshots:
    def save(self, vm: VM, snapshot_path: Path) -> Any:
        try:
            disks = vm.disks.snapshot_entries()
        except DiskError as exc:
            raise SnapshotError(f"vm:snapshot() failed for `{vm.name}`: {exc}") from exc
        if not disks:
            return None
        target = disks_dir(snapshot_path)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o700)
        entries = []
        try:
            for i, disk in enumerate(disks):
                assert disk.image is not None
                name = f"{i}.img"
                disk_image.copy_template(Path(disk.image), target / name)
                entries.append({"id": disk.id, "file": name, "readonly": disk.spec.readonly,
                                "mediated": disk.mediated, "source": disk.spec.source,
                                "format": disk.spec.format})
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise SnapshotError(f"vm:snapshot() failed for `{vm.name}`: copying disk images: "
                                f"{exc.strerror or exc}") from exc
        return {"version": VERSION, "disks": entries}

    def restore(self, vm: VM, data: Any, spec: VmSpec, snapshot_path: Path) -> VmSpec:
        where = f"vm:restore of `{vm.name}` from `{snapshot_path}`"
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("disks"), list):
            raise SnapshotError(f"{where}: the snapshot's disk list is not one this version reads")
        src = disks_dir(snapshot_path)
        saved: list[tuple[DiskSpec, Path]] = []
        for e in data["disks"]:
            if not isinstance(e, dict) or not isinstance(e.get("id"), str) or not isinstance(e.get("file"), str) \
                    or "/" in e["file"] or e["file"] in (".", ".."):
                raise SnapshotError(f"{where}: a disk entry of the snapshot is malformed: {e!r}")
            image = src / e["file"]
            if not image.is_file():
                raise SnapshotError(f"{where}: disk `{e['id']}`: its saved image `{image}` is missing")
            fmt = e.get("format", "raw")
            if fmt not in ("raw", "qcow2"):
                raise SnapshotError(f"{where}: disk `{e['id']}`: unknown image format {fmt!r}")
            base = rootdisk.backing_file(image) if fmt == "qcow2" else None
            if base is not None and not os.path.exists(base):
                raise SnapshotError(f"{where}: disk `{e['id']}` is an overlay over `{base}`, which is gone from the "
                                    "image cache (snapshots of a distro guest need the image they were taken over)")
            # The image is a copy now, whatever the disk was declared with.  A qcow2 copy
            # still names its read-only base (a distro guest's image in the image cache).
            decl = DiskSpec(id=e["id"], path=str(image), readonly=bool(e.get("readonly")),
                            mediated=bool(e.get("mediated")), format=fmt)
            saved.append((decl, image))
        try:
            disks = vm.disks.restore_disks(saved)
        except OSError as exc:
            raise SnapshotError(f"{where}: restoring disk images: {exc.strerror or exc}") from exc
        return dataclasses.replace(spec, disks=disks)


register_vm_hook("disks", DiskSnapshots())

"""The root disk of a distro guest (`debian`): the cached image behind a per-VM qcow2 overlay.

The image (image/debian.py) is shared by every VM of the same package set and is
never written: each VM gets a fresh qcow2 overlay in its own disk directory (made by
`VmDisks`, host/disk.py), so VMs never see each other's writes and the base stays
pristine.  The overlay is an ordinary boot disk of the VM (id `rootfs`, the first
disk: /dev/vda), so snapshots and fixtures copy it like any other disk
(host/disksnap.py); a copy still names the base, which stays in the image cache.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..vmm.base import DiskSpec
from .errors import VmmFailure

if TYPE_CHECKING:
    from ..config import Profile
    from .vm import VM

QCOW2_MAGIC = b"QFI\xfb"


def _say_to_log(vm: VM):
    def say(line: str) -> None:
        vm.log.info("%s", line)
    return say


async def spec_for(vm: VM, profile: Profile) -> DiskSpec | None:
    """The root disk a VM of `profile` boots from (None: the profile has none, or the VMM
    boots no image, as the local backend).  Builds the image on first use."""
    if not profile.distro or getattr(vm.session.vmm, "name", "") == "local":
        return None
    from ..image import ImageError, debian  # here: the image builders are not needed by other VMs

    cache_dir = vm.session.config.cache_dir
    try:
        base = await asyncio.to_thread(debian.ensure, profile.packages, cache_dir, _say_to_log(vm))
    except ImageError as exc:
        raise VmmFailure(f"vm `{vm.name}`: boot failed: profile `{profile.name}`: {exc}") from exc
    return DiskSpec(id=debian.ROOT_SERIAL, backing=str(base), format="qcow2")


def _qemu_img() -> str:
    found = shutil.which("qemu-img")
    if not found:
        raise VmmFailure("`qemu-img` not found (the `debian` guest's copy-on-write root needs it)\n"
                         "  → apt-get install qemu-utils")
    return found


async def create_overlay(spec: DiskSpec, path: Path) -> None:
    """A new qcow2 at `path` over `spec.backing` (raw), the same size."""
    assert spec.backing is not None
    argv = [_qemu_img(), "create", "-q", "-f", "qcow2", "-b", spec.backing, "-F", "raw", str(path)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise VmmFailure(f"disk `{spec.id}`: creating its copy-on-write overlay over `{spec.backing}` failed: "
                         f"{err.decode('utf-8', 'replace').strip()}")


def backing_file(path: str | os.PathLike) -> str | None:
    """The backing file a qcow2 image names in its header (None: not qcow2, or no backing)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", head[8:20])
            if not offset or not 0 < size <= 4096:
                return None
            f.seek(offset)
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return None

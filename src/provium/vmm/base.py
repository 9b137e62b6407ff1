"""The interface every VMM backend implements (QEMU, local).

`host/` drives VMs only through this; it never knows which backend it has.
All methods are coroutines run on the runner's asyncio loop.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import VmmError
from ..fsutil import read_tail

if TYPE_CHECKING:  # only a type here; the mux (and asyncio) loads with the backends, not with the config
    from ..protocol.mux import MuxClient

if TYPE_CHECKING:  # config imports DiskSpec from here: only a type reference back
    from ..config import Profile


class Unimplemented(VmmError):
    def __init__(self, backend: str, what: str) -> None:
        super().__init__(f"vmm: {what} is not yet implemented on the {backend} backend")


@dataclass
class BootFile:
    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ShareSpec:
    """A host directory shared into the guest with virtiofs, mounted at `guest` at boot."""

    host: str  # absolute host directory
    guest: str  # absolute guest mount point
    readonly: bool = False
    tag: str = ""  # the virtiofs tag the guest mounts


@dataclass(frozen=True)
class NicSpec:
    """One guest NIC: a virtio-net device whose backend is a unix stream socket that
    provium's switch listens on (`-netdev stream`, QEMU connects as the client).

    `id` is the QEMU netdev id (also what QMP `set_link` takes); `mac` is stable
    for (lab, VM, bridge); NICs are given in the order the guest should see them
    (eth0 first)."""

    id: str
    mac: str
    socket: str
    bridge: str


@dataclass(frozen=True)
class DiskSpec:
    """One disk of a VM, as declared (profile `disks`, boot `disks`, `attach_disk`).

    Exactly one source: `path` (an existing image, never created by provium),
    `scratch` (bytes: provium creates a zero-filled image of that size) or
    `template` (a file provium copies; the original is never written).  The host
    layer (`host/disk.py`) turns the declaration into what the VMM attaches: it
    sets `image` to the file the guest sees and, for a `mediated` disk, `nbd_socket`
    to the unix socket of provium's NBD server in front of that file (the path
    through which the guest sees injected faults).  Backends read only `id`, `format`,
    `image`, `readonly` and `nbd_socket`.
    """

    id: str
    path: str | None = None
    scratch: int | None = None
    template: str | None = None
    readonly: bool = False
    mediated: bool = False
    image: str | None = None  # set by the host layer: the file the guest's disk is
    nbd_socket: str | None = None  # set by the host layer for mediated disks
    # Ours: a read-only base image the host layer puts behind a fresh qcow2 overlay
    # (the `debian` guest's root disk); `format` is then "qcow2".
    backing: str | None = None
    format: str = "raw"

    @property
    def source(self) -> str:
        """Which source the disk was declared with: "path", "scratch", "template" or "overlay"."""
        if self.backing is not None:
            return "overlay"
        return "scratch" if self.scratch is not None else "template" if self.template is not None else "path"


@dataclass
class VmSpec:
    """Everything a backend needs to start one VM (creation opts merged with boot opts)."""

    name: str
    profile: Profile
    memory_bytes: int = 512 << 20
    cpus: int = 1
    kernel_cmdline: str | None = None  # replaces the profile's cmdline
    kernel_cmdline_append: str = ""
    rng_seed: int | None = None
    initial_time: int | None = None  # unix seconds
    files: list[BootFile] = field(default_factory=list)
    disks: list[DiskSpec] = field(default_factory=list)  # every disk, profile disks first
    nics: list[NicSpec] = field(default_factory=list)
    agent_boot_timeout: float | None = None
    accel: str | None = None  # run-wide override of the profile's accel
    shares: list[ShareSpec] = field(default_factory=list)


class VmInstance(abc.ABC):
    """A running VM.  `client` is connected and past the hello handshake."""

    backend: str = "?"
    cid: int = 0
    client: MuxClient
    console_log: Path | None = None
    console_socket: Path | None = None

    async def pause(self) -> None:
        raise Unimplemented(self.backend, "pause")

    async def resume(self) -> None:
        raise Unimplemented(self.backend, "resume")

    async def reset(self) -> None:
        """Hard reset; returns once the agent answers again (client replaced)."""
        raise Unimplemented(self.backend, "reset")

    async def power_button(self, timeout: float) -> None:
        """ACPI power button; returns once the VM has powered off."""
        raise Unimplemented(self.backend, "power_button")

    async def wakeup(self) -> None:
        raise Unimplemented(self.backend, "wakeup")

    async def snapshot(self, path: Path, extra: dict | None = None) -> int:
        """Write this VM's state to `path` (format: `vmm/snapfile.py`; temp name +
        rename); `extra` is per-VM data hooks want stored with it.  Returns the size."""
        raise Unimplemented(self.backend, "snapshot")

    async def set_link(self, nic_id: str, up: bool) -> None:
        """Carrier of one NIC (the guest sees link down/up)."""
        raise Unimplemented(self.backend, "set_link")

    async def attach_nic(self, nic: NicSpec) -> None:
        """Hot-plug a NIC (its switch port already listens); returns once QEMU has it."""
        raise Unimplemented(self.backend, "NIC hot-plug")

    async def attach_disk(self, disk: DiskSpec) -> None:
        """Hot-plug a resolved disk (`image`, maybe `nbd_socket`); returns once QEMU has it."""
        raise Unimplemented(self.backend, "disk hot-plug")

    async def detach_disk(self, disk_id: str) -> None:
        """Unplug a disk; returns once the guest has released it."""
        raise Unimplemented(self.backend, "disk hot-unplug")

    def console_tail(self, n: int = 4096) -> bytes:
        """Last n bytes of the console, b"" when the backend has no console."""
        if self.console_log is None:
            return b""
        return read_tail(self.console_log, n)

    async def discard(self) -> None:
        """Stop the VM as fast as possible, its guest state being thrown away (a
        restore in place replaces it).  Default: an ordinary shutdown."""
        await self.shutdown()

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the VM for good and free everything it held.  Idempotent."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """False once the VM (or the agent process) is gone."""


class Vmm(abc.ABC):
    name: str = "?"

    @abc.abstractmethod
    async def launch(self, spec: VmSpec) -> VmInstance:
        """Start a VM and return it once its agent has answered hello."""

    async def restore(self, spec: VmSpec, snapshot: Path) -> VmInstance:
        """Start a VM that resumes the guest saved in `snapshot`, once its agent answered.
        A bad file raises `snapfile.SnapshotFileError` naming it."""
        raise Unimplemented(self.name, "restore")

    async def prestart(self, spec: VmSpec, snapshot: Path) -> None:
        """Optionally get ready for a coming `restore(spec, snapshot)` (a hint: the
        default does nothing).  reset_between_tests calls it after each reset."""

    async def close(self) -> None:
        """Release backend-wide resources (scratch dirs, servers)."""

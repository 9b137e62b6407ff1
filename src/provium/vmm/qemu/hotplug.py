"""PCIe hot-plug slots of one q35 VM: which pre-created root port each hot-plugged device sits on.

PCIe has no hot-pluggable bus to add devices to directly: a device can only be
hot-added below a port that exists when the guest enumerates PCI.  So a q35 VM
is started with a fixed number of empty `pcie-root-port`s (`argv()`), and each
hot-plugged device (a disk, a NIC) takes one of them (`allocate`) and gives it
back when it is unplugged (`free`).  The set of ports depends only on the count,
so a restored VM started with the same count has the same ports.

microvm has no PCI bus at all: `allocate` then fails with an error that says so,
instead of QEMU's "Bus not found".

The ports are created with `io-reserve=0`: virtio devices on PCIe need no I/O
port space, and the x86 I/O space (64 KiB, 4 KiB per bridge window) would run
out after a dozen ports.  Pure bookkeeping, no I/O: the caller issues QMP.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import VmmError

DEFAULT_PORTS = 4
MAX_PORTS = 32  # chassis numbers and the first bus's slots stay well inside their limits
PORT_PREFIX = "hp"
# Root ports sit on the root complex from this slot on (low slots stay free for the
# devices on the command line: virtio-serial, boot disks, NICs).
FIRST_SLOT = 0x10


class HotplugError(VmmError):
    """No PCIe port is free for a hot-plugged device, or the machine has none."""


@dataclass(frozen=True)
class Port:
    """One pre-created root port: `id` is the QEMU bus name a device is added to."""

    id: str
    chassis: int
    slot: int

    def device_arg(self) -> str:
        return (f"pcie-root-port,id={self.id},bus=pcie.0,chassis={self.chassis},"
                f"addr={self.slot:#x},io-reserve=0")


class HotplugSlots:
    """The hot-plug ports of one VM and who holds each (owner strings, e.g. "disk:data")."""

    def __init__(self, machine: str, count: int = DEFAULT_PORTS) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_PORTS:
            raise HotplugError(f"hot-plug ports: count must be an integer 0..{MAX_PORTS}, got {count!r}")
        self.machine = machine
        self.ports: tuple[Port, ...] = () if machine == "microvm" else tuple(
            Port(f"{PORT_PREFIX}{i}", chassis=i + 1, slot=FIRST_SLOT + i) for i in range(count))
        self._held: dict[str, str] = {}  # port id -> owner

    def argv(self) -> list[str]:
        """The `-device pcie-root-port,...` arguments that create the ports at start-up."""
        out: list[str] = []
        for p in self.ports:
            out += ["-device", p.device_arg()]
        return out

    def allocate(self, owner: str) -> Port:
        """A free port for `owner`'s device; HotplugError when there is none."""
        if self.machine == "microvm":
            raise HotplugError(f"{owner}: hot-plug needs PCIe, and this VM's machine is microvm "
                               "(use machine = \"q35\" in the profile, or declare the device at boot)")
        if owner in self._held.values():
            raise HotplugError(f"{owner}: already holds hot-plug port `{self.port_of(owner).id}`")
        for p in self.ports:
            if p.id not in self._held:
                self._held[p.id] = owner
                return p
        held = ", ".join(f"{pid}={o}" for pid, o in sorted(self._held.items())) or "none"
        raise HotplugError(f"{owner}: all {len(self.ports)} hot-plug ports are in use ({held}); "
                           "unplug a device first")

    def port_of(self, owner: str) -> Port:
        for p in self.ports:
            if self._held.get(p.id) == owner:
                return p
        raise HotplugError(f"{owner}: holds no hot-plug port")

    def free(self, owner: str) -> None:
        """Give `owner`'s port back; a no-op when it holds none (idempotent unplug)."""
        for pid, o in list(self._held.items()):
            if o == owner:
                del self._held[pid]

    def held(self) -> dict[str, str]:
        """port id -> owner, for snapshots (a restore re-plugs these) and error messages."""
        return dict(self._held)

    def claim(self, port_id: str, owner: str) -> Port:
        """Take a specific port (a restored VM re-plugging its devices where they were)."""
        for p in self.ports:
            if p.id == port_id:
                if self._held.get(port_id, owner) != owner:
                    raise HotplugError(f"{owner}: hot-plug port `{port_id}` is held by {self._held[port_id]}")
                self._held[port_id] = owner
                return p
        raise HotplugError(f"{owner}: no hot-plug port `{port_id}` on this VM")

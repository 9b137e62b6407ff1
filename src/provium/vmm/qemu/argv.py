"""The QEMU command line for one VM (pure: no I/O, so tests can pin it)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..base import DiskSpec, NicSpec
from .hotplug import DEFAULT_PORTS, HotplugSlots

AGENT_PORT = "org.provium.agent"
# The agent port's device id: QEMU names it in VSERPORT_CHANGE (no id, no event),
# which is how the backend learns that the agent in the guest exited.
AGENT_PORT_ID = "agent-port"
RNG_SEED_FW_CFG = "opt/provium/rng-seed"
# microvm's defaults leave no timer a stock distribution kernel can calibrate against
# (it hangs at "tsc: Unable to calibrate"); the legacy PIT/PIC/RTC make it boot.
MICROVM = "microvm,pit=on,pic=on,rtc=on"
# QEMU's default CPU plus RDRAND: a kernel that trusts the CPU's RNG (most distribution
# kernels) has its entropy pool ready at once.  Without it, the first reader of
# /dev/urandom (Python, hashing its seed at start-up) makes a 6.x kernel gather
# timer jitter until the pool is ready: measured at over a second under TCG.
TCG_CPU = "qemu64,+rdrand"


@dataclass
class QemuConfig:
    qemu: str
    machine: str  # "q35" | "microvm"
    accel: str  # "kvm" | "tcg"
    memory_bytes: int
    cpus: int
    kernel: Path
    initrd: Path | None
    cmdline: str
    scratch: Path
    rng_seed: int | None = None
    initial_time: float | None = None
    disks: list[DiskSpec] = field(default_factory=list)  # resolved: `image` (and `nbd_socket`) set
    nics: list[NicSpec] = field(default_factory=list)
    hotplug_ports: int = DEFAULT_PORTS  # empty pcie-root-ports for hot-plug (q35 only)
    extra: list[str] = field(default_factory=list)  # run-wide extra arguments (experiments, benchmarks)
    # Guest RAM in a file (see vmm/qemu/ram.py): shared for a booted VM, so a snapshot
    # need not stream it; private (copy-on-write) when restoring from a snapshot file.
    ram_path: Path | None = None
    ram_share: bool = True
    incoming: bool = False  # start paused, waiting for `migrate-incoming` (restore)
    # `provium console`: the serial port (with QEMU's monitor on Ctrl-A C) on this
    # terminal instead of the socket + log, and no QMP.
    stdio_console: bool = False
    # QEMU's end of the QMP socketpair (passed to the child; see qmp.py's connect); None: no QMP.
    qmp_fd: int | None = None
    agent_port: bool = True  # the agent's virtio-serial port (off for a console without agent)
    shares_argv: list[str] = field(default_factory=list)  # virtiofs chardevs + devices (virtiofs.argv)

    def with_qmp_fd(self, fd: int) -> list[str]:
        """The argv with QEMU's monitor on inherited fd `fd` (for process.spawn_qemu)."""
        self.qmp_fd = fd
        return build(self)


def _q(path: str | Path) -> str:
    """A path inside a QEMU option value: commas are doubled."""
    return str(path).replace(",", ",,")


def rtc_base(initial_time: float | None) -> str | None:
    """`-rtc base=` text for a unix time, or None when QEMU cannot express it."""
    if initial_time is None:
        return None
    try:
        t = datetime.datetime.fromtimestamp(int(initial_time), tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1970 <= t.year <= 9999:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def qmp_args(fd: int | None) -> list[str]:
    """The QMP monitor on an inherited, connected socket (no socket file, nothing to
    poll for); none without a descriptor (benchmarks that only read the console)."""
    if fd is None:
        return []
    return ["-chardev", f"socket,id=qmp,fd={fd}", "-mon", "chardev=qmp,mode=control"]


def build(c: QemuConfig) -> list[str]:
    mib = max(1, c.memory_bytes >> 20)
    pci = c.machine != "microvm"
    machine = MICROVM if c.machine == "microvm" else "q35"
    s = c.scratch
    mem_opt = ""
    ram: list[str] = []
    if c.ram_path is not None:
        mem_opt = ",memory-backend=ram0"
        ram = ["-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={_q(c.ram_path)},"
                          f"share={'on' if c.ram_share else 'off'}"]
    elif c.shares_argv:  # vhost-user-fs needs RAM the daemon can map: memfd when /dev/shm had no room
        mem_opt = ",memory-backend=ram0"
        ram = ["-object", f"memory-backend-memfd,id=ram0,size={mib}M,share=on"]
    argv = [
        c.qemu,
        "-M", f"{machine},accel={c.accel}{mem_opt}",
        *ram,
        "-cpu", "host" if c.accel == "kvm" else TCG_CPU,
        "-m", f"{mib}M",
        "-smp", str(max(1, c.cpus)),
        "-nodefaults", "-no-reboot", "-display", "none", "-no-user-config",
        "-kernel", _q(c.kernel),
        *(["-initrd", _q(c.initrd)] if c.initrd else []),
        "-append", c.cmdline,
        *(["-serial", "mon:stdio"] if c.stdio_console else [
            *qmp_args(c.qmp_fd),
            "-chardev", f"socket,id=console,path={_q(s / 'console.sock')},server=on,wait=off,"
                        f"logfile={_q(s / 'console.log')},logappend=on",
            "-serial", "chardev:console"]),
        *([] if not c.agent_port else [
            "-device", "virtio-serial-pci,id=vser0" if pci else "virtio-serial-device,id=vser0",
            "-chardev", f"socket,id=agent,path={_q(s / 'agent.sock')},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=agent,id={AGENT_PORT_ID},name={AGENT_PORT}"]),
    ]
    base = rtc_base(c.initial_time)
    if base is not None:
        argv += ["-rtc", f"base={base},clock=host"]
    if c.rng_seed is not None:
        argv += ["-fw_cfg", f"name={RNG_SEED_FW_CFG},string={c.rng_seed & (2**64 - 1):016x}"]
    for i, d in enumerate(c.disks):
        argv += disk_args(d, i, pci)
    argv += nic_args(c.nics, pci)
    argv += c.shares_argv
    argv += HotplugSlots(c.machine, c.hotplug_ports).argv()
    argv += c.extra
    if c.incoming:
        argv += ["-incoming", "defer"]
    return argv


def nic_args(nics: list[NicSpec], pci: bool) -> list[str]:
    """Each NIC: a stream netdev connecting to the switch's socket, and a virtio-net
    device on it.  On q35 the devices take the next free slots of the root bus in this
    order, so the guest names them eth0, eth1, ... in the order given."""
    dev = "virtio-net-pci" if pci else "virtio-net-device"
    out: list[str] = []
    for n in nics:
        out += ["-netdev", f"stream,id={n.id},server=off,addr.type=unix,addr.path={_q(n.socket)}",
                "-device", f"{dev},netdev={n.id},id={n.id}-dev,mac={n.mac}"]
    return out


def blockdev(d: DiskSpec, node: str) -> dict:
    """The block node of a resolved disk, as a QMP `blockdev-add` argument (also used on
    the command line through `-blockdev` JSON, so boot and hot-plug attach alike).

    A mediated disk is provium's NBD server on a unix socket; QEMU's own cache is off
    (`cache.direct`) so every guest flush reaches the server, where power cuts happen.
    A plain disk is the file itself (raw, or a qcow2 overlay for a distro guest's root).
    """
    if d.nbd_socket:
        proto = {"driver": "nbd", "server": {"type": "unix", "path": d.nbd_socket}, "export": d.id}
        return {"node-name": node, "driver": "raw", "read-only": d.readonly,
                "cache": {"direct": True, "no-flush": False}, "file": proto}
    if not d.image:
        raise ValueError(f"disk `{d.id}`: no image resolved (host layer bug)")
    # A qcow2 overlay opens its backing file (named in its header) read-only by itself.
    return {"node-name": node, "driver": d.format, "read-only": d.readonly,
            "file": {"driver": "file", "filename": d.image}}


def blk_device(d: DiskSpec, node: str, blk: str, dev_id: str | None = None, bus: str | None = None) -> dict:
    """The virtio-blk device of a disk, as QMP `device_add` arguments.

    QEMU ids are restricted, so the user's id goes into the serial (the guest sees it in
    /sys/block/vdX/serial); the attachment order gives vda, vdb, ...
    """
    dev: dict = {"driver": blk, "drive": node, "serial": d.id[:20]}
    if dev_id:
        dev["id"] = dev_id
    if bus:
        dev["bus"] = bus
    return dev


BOOT_DISK_CHASSIS = 64  # chassis numbers of boot disks' own ports (hot-plug ports use 1..32)


def boot_disk_ids(i: int) -> tuple[str, str, str]:
    """(node name, device id, port id) of the i-th boot disk."""
    return f"disk{i}", f"disk{i}-dev", f"disk{i}-port"


def disk_args(d: DiskSpec, i: int, pci: bool) -> list[str]:
    """A boot disk.  On q35 each sits behind its own pcie-root-port: a device on the root
    complex itself cannot be unplugged, and `disk:detach` must work on boot disks too."""
    node, dev_id, port = boot_disk_ids(i)
    out: list[str] = []
    bus = None
    if pci:
        out += ["-device", f"pcie-root-port,id={port},bus=pcie.0,chassis={BOOT_DISK_CHASSIS + i},io-reserve=0"]
        bus = port
    dev = blk_device(d, node, "virtio-blk-pci" if pci else "virtio-blk-device", dev_id, bus)
    opts = ",".join(f"{k}={_q(v)}" for k, v in dev.items())
    return out + ["-blockdev", json.dumps(blockdev(d, node), separators=(",", ":")), "-device", opts]

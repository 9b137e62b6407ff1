"""The QEMU backend: one `qemu-system-x86_64` per VM, driven over QMP, agent over virtio-serial.

Per VM a scratch directory `$TMPDIR/provium-qemu-<our pid>/vm-<cid>/` holds the
QMP socket, the agent's chardev socket, the console socket and log, QEMU's
stderr and the per-boot initrd.  It goes away at shutdown, and the whole
`provium-qemu-<pid>` root at `close()`; roots left by a process that was killed
are swept the next time a backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ... import artifacts, image, runfiles
from ...config import VALID_ACCEL
from ...fsutil import read_tail
from ...protocol.mux import ClientError, ClientState, ConnectionLost, MuxClient
from .. import snapfile
from ..base import DiskSpec, NicSpec, VmInstance, Vmm, VmmError, VmSpec
from ..pidwait import ExitWatch
from . import accel as accel_mod
from . import argv as argv_mod
from . import process
from . import ram as ram_mod
from . import snapshot as snapshot_mod
from . import virtiofs
from .hotplug import HotplugSlots
from .qmp import Qmp, QmpError

DEFAULT_QEMU = "qemu-system-x86_64"
DEFAULT_BOOT_TIMEOUT = 30.0
QMP_CONNECT_TIMEOUT = 5.0
QUIT_GRACE = 2.0
RESET_EVENT_TIMEOUT = 10.0
UNPLUG_TIMEOUT = 30.0
CONSOLE_TAIL = 4096
KEEP_CONSOLE = 256 << 10  # kept in memory after shutdown, when the log file is gone

_cids = itertools.count(3)  # process-wide, like vsock CIDs (0-2 are reserved there)


def console_block(tail: bytes) -> str:
    text = tail.decode("utf-8", "replace")
    return f"\n--- guest console (last bytes) ---\n{text}\n--- end guest console ---"


def _tail(path: Path, n: int) -> bytes:
    return read_tail(path, n)


def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's TSC follows.

    microvm has no HPET or ACPI PM timer, and under TCG the kernel's PIT calibration
    of the TSC fails (emulation is too irregular), after which it hangs; handing it
    the rate with `tsc_early_khz=` skips that calibration.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def scratch_roots_of(pid: int, scratch_root: str | None = None) -> list[Path]:
    """Where a process `pid` keeps (or would keep) its VMs' scratch directories."""
    base = Path(scratch_root) if scratch_root else Path(tempfile.gettempdir())
    return [base / f"provium-qemu-{pid}", Path("/tmp") / f"provium-qemu-{pid}"]


def remove_scratch_of(pid: int) -> None:
    """Remove the scratch root of a runner that was killed (it could not clean up).

    Called by whoever killed it, at once: waiting for the next run's sweep left
    sockets and console logs behind after every Ctrl-C, SIGTERM or file timeout."""
    for d in scratch_roots_of(pid):
        shutil.rmtree(d, ignore_errors=True)


def sweep_stale_roots(tmp: Path) -> None:
    """Remove scratch roots of provium processes that no longer exist (killed ones)."""
    runfiles.sweep_stale(tmp, ("provium-qemu-",))


async def _quiet_qmp(coro) -> None:
    """Undo steps of a failed hot-plug: the first error is the one to report."""
    with contextlib.suppress(QmpError):
        await coro


def tcg_cmdline(cmdline: str, *, machine: str, accel: str) -> str:
    """The kernel command line with what a guest needs to boot reliably under TCG.

    `no_timer_check`: on a loaded host the emulated timer can miss the kernel's
    early check that its interrupt arrives through the IO-APIC, and the guest then
    panics ("IO-APIC + timer doesn't work"); seen under load on 2 cores.
    `tsc_early_khz=` on microvm: see `host_tsc_khz`.
    """
    if accel != "tcg":
        return cmdline
    words = cmdline.split()
    if "no_timer_check" not in words:
        cmdline += " no_timer_check"
    if machine == "microvm" and not any(w.startswith("tsc_early_khz=") for w in words):
        khz = host_tsc_khz()
        if khz:
            cmdline += f" tsc_early_khz={khz}"
    return cmdline


class QemuVmm(Vmm):
    name = "qemu"

    def __init__(self, *, accel: str | None = None, qemu: str | None = None, cache_dir: str | None = None,
                 boot_timeout: float | None = None, scratch_root: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        if accel is not None and accel not in VALID_ACCEL:
            raise VmmError(f"qemu backend: accel {accel!r} is not valid (valid: {', '.join(VALID_ACCEL)})")
        self.accel = accel
        self.qemu = qemu or DEFAULT_QEMU
        self.cache_dir = cache_dir
        self.boot_timeout = boot_timeout
        # Appended to every QEMU command line ("{scratch}" is the VM's scratch dir);
        # for experiments and benchmarks, like `provium console -- ARGS`.
        self.extra_args = list(extra_args or [])
        self._scratch_root_base = Path(scratch_root) if scratch_root else Path(tempfile.gettempdir())
        self._root: Path | None = None
        self._instances: set[QemuInstance] = set()
        # Paused QEMUs waiting for the next restore of a VM (snapshot.prestart).
        self._standby: dict[tuple[str, str, int], QemuInstance] = {}
        self.accel_notes: list[str] = []

    # ---- helpers ---------------------------------------------------------------------

    def qemu_binary(self) -> str:
        found = shutil.which(self.qemu)
        if not found:
            raise VmmError(f"qemu backend: `{self.qemu}` not found on PATH\n"
                           "  → apt-get install qemu-system-x86 (or use --vmm local to run without VMs)")
        return found

    def _scratch_root(self) -> Path:
        if self._root is None:
            root = self._scratch_root_base / f"provium-qemu-{os.getpid()}"
            # Unix socket paths are limited to 107 bytes; long $TMPDIRs fall back to /tmp.
            if len(str(root / "vm-999999" / "console.sock")) > 100:
                root = Path("/tmp") / f"provium-qemu-{os.getpid()}"
            sweep_stale_roots(root.parent)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._root = root
        return self._root

    @staticmethod
    def _disks(spec: VmSpec) -> list[DiskSpec]:
        """The host layer resolved every disk (profile disks first); check it did."""
        for d in spec.disks:
            if not d.image:
                raise VmmError(f"disk `{d.id}`: no image resolved for it")
        return list(spec.disks)

    # ---- launch ----------------------------------------------------------------------

    async def launch(self, spec: VmSpec) -> QemuInstance:
        qemu = self.qemu_binary()
        cid = next(_cids)
        scratch = self._scratch_root() / f"vm-{cid}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        try:
            inst = await self._launch(spec, qemu, cid, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self._instances.add(inst)
        return inst

    async def _launch(self, spec: VmSpec, qemu: str, cid: int, scratch: Path) -> QemuInstance:
        profile = spec.profile
        try:
            images = await asyncio.to_thread(
                image.compose, profile, kernel_cmdline=spec.kernel_cmdline,
                kernel_cmdline_append=spec.kernel_cmdline_append or "", files=spec.files,
                scratch=scratch, cache_dir=self.cache_dir, vm_name=spec.name)
        except image.ImageError as exc:
            raise VmmError(str(exc)) from exc
        requested = spec.accel or self.accel or profile.accel or "auto"
        accel, why = await asyncio.to_thread(accel_mod.resolve, requested, qemu=qemu, kernel=images.kernel,
                                             cache_dir=self.cache_dir)
        if requested == "auto" and accel == "tcg" and why and why not in self.accel_notes:
            self.accel_notes.append(why)
        cmdline = tcg_cmdline(images.cmdline, machine=profile.machine, accel=accel)
        rdir = ram_mod.ram_dir(spec.memory_bytes)
        ram_file = rdir / f"vm-{cid}.ram" if rdir is not None else None
        daemons = await virtiofs.start(list(spec.shares), scratch) if spec.shares else []
        cfg = argv_mod.QemuConfig(
            qemu=qemu, machine=profile.machine, accel=accel, memory_bytes=spec.memory_bytes, cpus=spec.cpus,
            kernel=images.kernel, initrd=images.initrd, cmdline=cmdline, scratch=scratch,
            rng_seed=spec.rng_seed, initial_time=spec.initial_time, disks=self._disks(spec), nics=list(spec.nics),
            extra=[a.replace("{scratch}", str(scratch)) for a in self.extra_args],
            ram_path=ram_file, shares_argv=virtiofs.argv(daemons, profile.machine != "microvm"))
        hotplug = HotplugSlots(profile.machine, cfg.hotplug_ports)
        timeout = spec.agent_boot_timeout or profile.agent_boot_timeout or self.boot_timeout or DEFAULT_BOOT_TIMEOUT
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = time.monotonic()
        try:
            proc, qmp_sock, argv = process.spawn_qemu(cfg.with_qmp_fd, stderr_path=scratch / "qemu.stderr",
                                                      cwd=scratch)
        except BaseException:
            await virtiofs.stop(daemons)
            raise
        (scratch / "qemu.argv").write_text(shlex.join(argv) + "\n")
        inst = QemuInstance(self, spec, cid, proc, scratch, accel, timeout, qmp_sock)
        inst.share_daemons = daemons
        inst.machine, inst.kernel, inst.cmdline = profile.machine, images.kernel, cmdline
        inst.ram_file, inst.ram_shared = ram_file, ram_file is not None
        inst.hotplug = hotplug
        inst.record_boot_disks(cfg.disks)
        try:
            await inst._qmp_connect(min(QMP_CONNECT_TIMEOUT, timeout))
            if profile.inject_agent:
                inst.client = await inst._connect_agent(deadline)
            elif profile.boot_marker:
                await inst._wait_console(profile.boot_marker, deadline)
        except BaseException as exc:
            detail = inst._failure_text(exc, timeout)
            await inst._kill()
            if isinstance(exc, (VmmError, ClientError, OSError, asyncio.TimeoutError)):
                raise VmmError(detail) from exc
            raise
        inst.boot_seconds = time.monotonic() - started
        return inst

    async def restore(self, spec: VmSpec, snapshot: Path) -> "QemuInstance":
        meta = snapfile.read_meta(snapshot)
        return await snapshot_mod.restore(self, spec, Path(snapshot), meta)

    async def prestart(self, spec: VmSpec, snapshot: Path) -> None:
        await snapshot_mod.prestart(self, spec, Path(snapshot))

    async def close(self) -> None:
        self._standby.clear()  # they are in _instances too
        for inst in list(self._instances):
            try:
                await inst.shutdown()
            except Exception:
                pass
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        shm = ram_mod.SHM / f"provium-qemu-{os.getpid()}"
        if shm.is_dir():
            shutil.rmtree(shm, ignore_errors=True)


class QemuInstance(VmInstance):
    backend = "qemu"

    def __init__(self, vmm: QemuVmm, spec: VmSpec, cid: int, proc, scratch: Path, accel: str,
                 boot_timeout: float, qmp_sock: socket.socket) -> None:
        self.vmm = vmm
        self.spec = spec
        self.cid = cid
        self.proc = proc
        self.pid = proc.pid
        self.scratch = scratch
        self.accel = accel
        self.boot_timeout = boot_timeout
        self.console_log: Path = scratch / "console.log"
        self.console_socket = scratch / "console.sock"
        self.agent_socket = scratch / "agent.sock"
        self.qmp = Qmp(f"provium-{spec.name}-{cid}", log_path=scratch / "qmp.log")
        self._qmp_sock: socket.socket | None = qmp_sock  # handed to self.qmp by _qmp_connect
        self.client = None  # type: ignore[assignment]
        self.boot_seconds = 0.0
        # Set by launch/restore: what a snapshot records and a restore needs.
        self.machine = spec.profile.machine
        self.kernel: Path | None = None
        self.cmdline = ""
        self.ram_file: Path | None = None  # our RAM file on /dev/shm (removed at shutdown)
        self.ram_shared = False  # False: anonymous RAM or a private map of a snapshot file
        self.last_snapshot_pause = 0.0
        # The free/held pcie-root-ports for devices plugged while the VM runs (disks, NICs).
        self.hotplug = HotplugSlots(spec.profile.machine, 0)
        self._disk_devs: dict[str, tuple[str, str, str | None]] = {}  # disk id -> (node, device, port owner)
        self._hot_seq = itertools.count()
        self._closed = False
        self._saved_console: bytes | None = None
        self._lock = asyncio.Lock()
        # True once provium itself powers the guest off: its agent exiting is then expected.
        self._agent_exit_expected = False
        self.qmp.watch(self._on_qmp_event)
        self.share_daemons: list[virtiofs.Daemon] = []  # owned: stopped in _kill/shutdown

    # ---- start-up --------------------------------------------------------------------

    async def _qmp_connect(self, timeout: float) -> None:
        """QMP over the socketpair QEMU was started with: a QEMU that exits during
        start-up closes its end, so this fails at once without watching the process."""
        sock, self._qmp_sock = self._qmp_sock, None
        if sock is None:
            raise VmmError("QMP is already connected")
        try:
            await self.qmp.connect(sock, timeout)
        except QmpError as exc:
            rc = await process.wait_exit(self.proc, 0.5)  # a closed monitor usually means QEMU is exiting
            if rc is not None:
                raise VmmError(f"QEMU exited during start-up (status {rc})") from exc
            raise

    async def _connect_agent(self, deadline: float) -> MuxClient:
        """Connect to the agent's chardev and complete one hello before `deadline`.

        One hello on one connection is enough: until the guest opens its end of the
        port, QEMU leaves our bytes in the socket, so the hello waits for the agent.
        (Repeating it would queue hellos that reset channels the agent has already
        opened for us.)  Meanwhile QEMU is watched, so a guest that dies fails fast.
        """
        loop = asyncio.get_running_loop()
        watch = ExitWatch(self.proc.pid)  # QEMU's exit, as an event (a pidfd)
        try:
            while True:
                client = await MuxClient.open_unix(str(self.agent_socket))
                hello = asyncio.ensure_future(client.hello(timeout=None))
                try:
                    left = deadline - loop.time()
                    waits: set[asyncio.Future[Any]] = {hello, watch.exited}
                    await asyncio.wait(waits, timeout=max(0.0, left),
                                       return_when=asyncio.FIRST_COMPLETED)
                    if hello.done():
                        hello.result()
                        return client
                    if watch.exited.done():
                        raise VmmError(f"QEMU exited (status {self.proc.poll()}) before the agent answered")
                    raise TimeoutError()
                except (ConnectionLost, ConnectionError) as exc:
                    await client.close()
                    if watch.exited.done() or loop.time() >= deadline:
                        raise VmmError(f"agent connection failed: {exc}") from exc
                    # QEMU refuses a new client until its main loop has noticed that the
                    # previous one left (after a reset we reconnect at once).  Nothing
                    # signals that moment (no QMP event for a chardev's client), so
                    # retry after a short pause.
                    await asyncio.sleep(0.05)
                except BaseException:
                    hello.cancel()
                    await client.close()
                    raise
        finally:
            watch.close()

    async def _wait_console(self, marker: str, deadline: float) -> None:
        """A profile without the agent: wait until the console log shows `marker`.

        Polled (50 ms): the log is a file QEMU appends to, and the events that
        exist are inotify (not in the stdlib) or reading `console.sock`, whose
        single client slot belongs to the console hub (host/console.py).  Only
        agent-less profiles come here, and only during boot."""
        loop = asyncio.get_running_loop()
        want = marker.encode()
        seen = 0  # bytes of the log already searched (minus an overlap for a split marker)
        while True:
            try:
                with open(self.console_log, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if want in chunk:
                return
            seen += max(0, len(chunk) - len(want) + 1)
            if self.proc.poll() is not None:
                raise VmmError(f"QEMU exited (status {self.proc.returncode}) before the console showed the "
                               f"boot marker {marker!r}")
            if loop.time() >= deadline:
                raise VmmError(f"the console did not show the boot marker {marker!r} within "
                               f"{self.boot_timeout:g}s (profile `boot_marker`)")
            await asyncio.sleep(0.05)

    def _failure_text(self, exc: BaseException, timeout: float) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            what = f"the guest agent did not answer within {timeout:g}s"
        else:
            what = str(exc)
        rc = self.proc.poll()
        if rc is not None:
            err = _tail(self.scratch / "qemu.stderr", 2048).decode("utf-8", "replace").strip()
            if err:
                what += f"\nQEMU said: {err}"
        return f"{what}{console_block(self.console_tail(CONSOLE_TAIL))}"

    def stderr_tail(self) -> str:
        err = _tail(self.scratch / "qemu.stderr", 2048).decode("utf-8", "replace").strip()
        return f"\nQEMU said: {err}" if err else ""

    # ---- the agent's death ---------------------------------------------------------

    def _on_qmp_event(self, ev: dict) -> None:
        """The agent's port closed in the guest: the agent exited (killed, crashed, or
        picked by the guest's OOM killer).  QEMU keeps our end of the chardev open, so
        without this every call would wait for its timeout; fail them all now, and the
        host marks the VM dead.  Closes we cause are not deaths: during a reset or a
        restore there is no client yet (`client` is None), a shut-down instance is
        `_closed`, and a power-off sets `_agent_exit_expected`."""
        if ev.get("event") != "VSERPORT_CHANGE":
            return
        data = ev.get("data") or {}
        if data.get("id") != argv_mod.AGENT_PORT_ID or data.get("open", True):
            return
        client = self.client
        if client is None or self._closed or self._agent_exit_expected or client.state is not ClientState.OPEN:
            return
        client.abort(ConnectionLost(
            "the agent in the guest died (its virtio-serial port closed: killed, crashed, "
            "or chosen by the guest's OOM killer)" + console_block(self.console_tail(CONSOLE_TAIL))))

    # ---- control ---------------------------------------------------------------------

    async def snapshot(self, path: Path, extra: dict | None = None) -> int:
        if self.spec.shares:
            raise VmmError(f"vm `{self.spec.name}` has host directory shares ("
                           + ", ".join(f"`{s.host}` → `{s.guest}`" for s in self.spec.shares)
                           + "): QEMU marks its virtiofs devices (vhost-user-fs) unmigratable, so a VM with a "
                           "share cannot be snapshotted (boot the fixture without `shares`)")
        async with self._lock:
            return await snapshot_mod.save(self, path, extra or {})

    async def pause(self) -> None:
        await self.qmp.execute("stop")

    async def resume(self) -> None:
        await self.qmp.execute("cont")

    async def wakeup(self) -> None:
        await self.qmp.execute("system_wakeup")

    async def set_link(self, nic_id: str, up: bool) -> None:
        # On the netdev: QEMU sets its peer (the virtio-net device) too and tells the guest.
        await self.qmp.execute("set_link", {"name": nic_id, "up": bool(up)})

    async def reset(self) -> None:
        """Hard reset; returns once the agent of the rebooted guest has answered."""
        async with self._lock:
            mark = self.qmp.mark()
            # -no-reboot turns every reset into a shutdown, and the firmware resets once
            # more on its way up: allow resets until the new agent has answered.
            await self.qmp.execute("set-action", {"reboot": "reset"})
            old, self.client = self.client, None  # type: ignore[assignment]  # none while the guest resets
            try:
                if old is not None:
                    await old.close()
                await self.qmp.execute("system_reset")
                if await self.qmp.wait_event(("RESET",), mark, RESET_EVENT_TIMEOUT) is None:
                    raise VmmError(f"reset: QEMU reported no RESET within {RESET_EVENT_TIMEOUT:g}s")
                loop = asyncio.get_running_loop()
                if not self.spec.profile.inject_agent:
                    return
                try:
                    self.client = await self._connect_agent(loop.time() + self.boot_timeout)
                except TimeoutError:
                    raise VmmError(f"reset: the guest agent did not answer within {self.boot_timeout:g}s"
                                   + console_block(self.console_tail(CONSOLE_TAIL))) from None
            finally:
                if self.proc.poll() is None:
                    try:
                        await self.qmp.execute("set-action", {"reboot": "shutdown"})
                    except QmpError:
                        pass

    async def power_button(self, timeout: float) -> None:
        """ACPI power button; returns once QEMU has exited (the guest powered off)."""
        self._agent_exit_expected = True  # the guest's shutdown stops the agent
        await self.qmp.execute("system_powerdown")
        rc = await process.wait_exit(self.proc, timeout)
        if rc is None:
            raise VmmError(f"power_button: the guest did not power off within {timeout:g}s"
                           + console_block(self.console_tail(CONSOLE_TAIL)))

    # ---- disk hot-plug ---------------------------------------------------------------

    def record_boot_disks(self, disks: list[DiskSpec]) -> None:
        """The disks on the command line, so `detach_disk` finds their QEMU ids."""
        for i, d in enumerate(disks):
            node, dev, _port = argv_mod.boot_disk_ids(i)
            self._disk_devs[d.id] = (node, dev, None)

    async def attach_nic(self, nic: NicSpec) -> None:
        """netdev_add (a stream client of the switch's socket), then a virtio-net device on
        a free PCIe root port; the guest's pciehp announces it as the next ethN."""
        if self.spec.profile.machine == "microvm":
            raise VmmError("NIC hot-plug needs PCIe, and this VM's machine is microvm (attach before boot)")
        owner = f"nic `{nic.id}`"
        port = self.hotplug.allocate(owner)
        try:
            await self.qmp.execute("netdev_add", {"type": "stream", "id": nic.id, "server": False,
                                                  "addr": {"type": "unix", "path": nic.socket}})
            try:
                await self.qmp.execute("device_add", {"driver": "virtio-net-pci", "netdev": nic.id,
                                                      "id": f"{nic.id}-dev", "mac": nic.mac, "bus": port.id})
            except BaseException:
                await _quiet_qmp(self.qmp.execute("netdev_del", {"id": nic.id}))
                raise
        except BaseException:
            self.hotplug.free(owner)
            raise

    async def attach_disk(self, disk: DiskSpec) -> None:
        if disk.id in self._disk_devs:
            raise VmmError(f"disk `{disk.id}` is already plugged into this VM")
        owner = f"disk `{disk.id}`"
        port = self.hotplug.allocate(owner)
        n = next(self._hot_seq)
        node, dev = f"hdisk{n}", f"hdisk{n}-dev"
        try:
            await self.qmp.execute("blockdev-add", argv_mod.blockdev(disk, node))
            try:
                await self.qmp.execute("device_add", argv_mod.blk_device(disk, node, "virtio-blk-pci", dev, port.id))
            except BaseException:
                await _quiet_qmp(self.qmp.execute("blockdev-del", {"node-name": node}))
                raise
        except BaseException:
            self.hotplug.free(owner)
            raise
        self._disk_devs[disk.id] = (node, dev, owner)

    async def detach_disk(self, disk_id: str) -> None:
        """device_del, then wait for QEMU's DEVICE_DELETED for that device (the guest has
        released it: ACPI hot-plug on q35), then drop the block node and the port."""
        try:
            node, dev, owner = self._disk_devs[disk_id]
        except KeyError:
            raise VmmError(f"disk `{disk_id}` is not plugged into this VM") from None
        if self.spec.profile.machine == "microvm":
            raise VmmError("hot-unplug needs PCIe, and this VM's machine is microvm")
        mark = self.qmp.mark()
        await self.qmp.execute("device_del", {"id": dev})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNPLUG_TIMEOUT
        while True:
            now = self.qmp.mark()  # before the scan: an event after it wakes the wait
            if any(ev.get("event") == "DEVICE_DELETED" and (ev.get("data") or {}).get("device") == dev
                   for ev in self.qmp.events_since(mark)):
                break
            left = deadline - loop.time()
            if left <= 0:
                raise VmmError(f"the guest did not release disk `{disk_id}` within {UNPLUG_TIMEOUT:g}s "
                               "(is the VM paused, or its kernel without PCIe hot-plug?)")
            await self.qmp.wait_event(("DEVICE_DELETED",), now, left)
        await self.qmp.execute("blockdev-del", {"node-name": node})
        del self._disk_devs[disk_id]
        if owner is not None:
            self.hotplug.free(owner)

    # ---- teardown --------------------------------------------------------------------

    async def _kill(self) -> None:
        self._save_console()
        if self.client is not None:
            await self.client.close()
        await self.qmp.close()
        await process.kill(self.proc)
        await virtiofs.stop(self.share_daemons)
        artifacts.keep_vm_evidence(self.scratch, f"{self.spec.name}-vm{self.cid}")
        shutil.rmtree(self.scratch, ignore_errors=True)
        ram_mod.remove(self.ram_file)

    async def discard(self) -> None:
        """SIGKILL, no `quit`: nothing of this guest is kept (restore in place)."""
        if self._closed:
            return
        self._closed = True
        await self._kill()
        self.vmm._instances.discard(self)

    def _save_console(self) -> None:
        if self._saved_console is None:
            self._saved_console = _tail(self.console_log, KEEP_CONSOLE)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._save_console()
        if self.client is not None:
            await self.client.close()
        if self.proc.poll() is None:
            try:
                await self.qmp.execute("quit", timeout=0.5)
            except QmpError:
                pass
        await self.qmp.close()
        if await process.wait_exit(self.proc, QUIT_GRACE) is None:
            await process.kill(self.proc)
        await virtiofs.stop(self.share_daemons)
        artifacts.keep_vm_evidence(self.scratch, f"{self.spec.name}-vm{self.cid}")
        shutil.rmtree(self.scratch, ignore_errors=True)
        ram_mod.remove(self.ram_file)
        self.vmm._instances.discard(self)

    def alive(self) -> bool:
        if self._closed or self.proc.poll() is not None:
            return False
        if self.client is None:
            # Fine for a profile without an agent; with one, a reset that never got the
            # agent back left a guest nothing can drive (its VM is then `dead`).
            return not self.spec.profile.inject_agent
        return self.client.lost is None

    def console_tail(self, n: int = 4096) -> bytes:
        if self._saved_console is not None:
            return self._saved_console[-n:] if n else b""
        return _tail(self.console_log, n) if n else b""

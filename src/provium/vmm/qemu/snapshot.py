"""QEMU snapshot and restore: `stop` + migrate to a file, and `-incoming` from it.

QEMU 7.2 has no `file:` migration URI, so the stream goes through `exec:`
(`cat > tmp` to save, `dd` of the state section to restore).  The format is
`vmm/snapfile.py`.

Save.  A VM whose RAM is a shared file on /dev/shm (`ram.py`) is saved with
`x-ignore-shared`: QEMU writes only the device state, and we copy the RAM
file's data extents into the snapshot while the guest is stopped (ram_mode
"file").  A VM without such a file (restored ones map their RAM privately;
/dev/shm too small) is migrated classically, RAM inside the stream (ram_mode
"stream").  The guest is stopped for the copy only; it resumes if it was running.

Restore.  ram_mode "file": a new QEMU maps the snapshot file itself as RAM,
`share=off` (private copy-on-write: the file is never written, many VMs share
its clean pages), with `x-ignore-shared` on.  ram_mode "stream": fresh shared
RAM on /dev/shm, the stream fills it.  Then `migrate-incoming`, wait for
`completed` (bounded: a damaged stream fails or times out, QEMU is killed,
never hangs the caller), `cont`, and the agent channel is reconnected: the
guest agent kept its virtio-serial port open across the snapshot.

The guest clock: QEMU migrates its virtual clock, so the guest's monotonic
clock continues from the snapshot moment (no jump backwards; the agent's
timers are all host-side anyway) and its wall clock reads the snapshot's time
plus the time it has run since the restore: a restored guest lives "in the past",
as in the reference.  `vm:clock()` sets it when a test needs real time.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ProviumError
from .. import snapfile
from ..base import VmmError, VmSpec
from ..pidwait import ExitWatch
from . import argv as argv_mod
from . import process
from . import ram as ram_mod
from .hotplug import HotplugSlots
from .qmp import QmpError

if TYPE_CHECKING:
    from .backend import QemuInstance, QemuVmm

MIGRATE_TIMEOUT = 120.0
_vmm_version: str | None = None


def qemu_version(qemu: str) -> str:
    global _vmm_version
    if _vmm_version is None:
        try:
            out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
            _vmm_version = out.splitlines()[0].strip() if out else ""
        except (OSError, subprocess.SubprocessError):
            _vmm_version = ""
    return _vmm_version


async def _wait_migration(inst: QemuInstance, what: str, mark: int, timeout: float = MIGRATE_TIMEOUT) -> None:
    """Until the migration started after QMP mark `mark` completes.

    QEMU announces each status change as a MIGRATION event (the `events`
    capability, set in `_set_capabilities`), and a pidfd says when QEMU exits,
    so this waits on those two instead of polling `query-migrate`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    watch = ExitWatch(inst.proc.pid)
    try:
        while True:
            seen = inst.qmp.mark()  # before the scan: an event after it wakes the wait below
            statuses = {(ev.get("data") or {}).get("status") for ev in inst.qmp.events_since(mark)
                        if ev.get("event") == "MIGRATION"}
            if "completed" in statuses:
                return
            if watch.exited.done():
                raise VmmError(f"{what}: QEMU exited (status {inst.proc.poll()})" + inst.stderr_tail())
            bad = statuses & {"failed", "cancelled"}
            if bad:
                info = await inst.qmp.execute("query-migrate")
                raise VmmError(f"{what}: migration {bad.pop()}: {(info or {}).get('error-desc', 'no detail')}"
                               + inst.stderr_tail())
            left = deadline - loop.time()
            if left <= 0:
                info = await inst.qmp.execute("query-migrate")
                raise VmmError(f"{what}: migration did not complete within {timeout:g}s "
                               f"(status {(info or {}).get('status')})")
            event = asyncio.ensure_future(inst.qmp.wait_event(("MIGRATION",), seen, left))
            waits: set[asyncio.Future[Any]] = {event, watch.exited}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                event.cancel()
                await asyncio.gather(event, return_exceptions=True)
    finally:
        watch.close()


async def _set_capabilities(inst: QemuInstance, ignore_shared: bool) -> None:
    await inst.qmp.execute("migrate-set-capabilities", {"capabilities": [
        {"capability": "x-ignore-shared", "state": ignore_shared},
        {"capability": "events", "state": True},  # MIGRATION events: _wait_migration waits on them
    ]})


async def save(inst: QemuInstance, path: Path, extra: dict[str, Any]) -> int:
    """Write a snapshot of `inst` to `path` (temp name + rename); returns its size."""
    path = Path(path)
    final_tmp = snapfile.write_tmp_name(path)
    spec = inst.spec
    ram_file = inst.ram_file if inst.ram_shared else None
    file_mode = ram_file is not None
    tmp = final_tmp
    if ram_file is not None and _device(path.parent) != _device(ram_file.parent):
        # Copying the RAM to disk while the guest is stopped costs 5x more than to
        # tmpfs (measured 0.33 s vs 0.067 s for 128 MiB of data): stage the whole file
        # on /dev/shm, resume the guest, then copy it to its place.
        tmp = ram_file.parent / f"stage-{inst.cid}-{final_tmp.name}"
    status = await inst.qmp.execute("query-status")
    was_running = bool((status or {}).get("running"))
    state_tmp = inst.scratch / "state.tmp" if file_mode else tmp
    try:
        await _set_capabilities(inst, file_mode)
        if was_running:
            await inst.qmp.execute("stop")
        stopped = time.monotonic()
        try:
            mark = inst.qmp.mark()
            await inst.qmp.execute("migrate", {"uri": "exec:cat > " + shlex.quote(str(state_tmp))})
            await _wait_migration(inst, "snapshot", mark)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | (0 if not file_mode else os.O_TRUNC), 0o600)
            try:
                if ram_file is not None:
                    # While the guest is stopped: its RAM must not change under the copy.
                    os.ftruncate(fd, spec.memory_bytes)
                    await asyncio.to_thread(ram_mod.copy_data, ram_file, fd, spec.memory_bytes)
            except BaseException:
                os.close(fd)
                raise
        finally:
            if was_running and inst.proc.poll() is None:
                await inst.qmp.execute("cont")
            inst.last_snapshot_pause = time.monotonic() - stopped  # what the guest felt (bench/snapshot.py)
        try:
            if file_mode:
                state_off = snapfile.align(spec.memory_bytes)
                state_len = await asyncio.to_thread(_append_file, state_tmp, fd, state_off)
                ram_size = spec.memory_bytes
            else:
                state_off, state_len, ram_size = 0, os.fstat(fd).st_size, 0
            meta = snapfile.SnapshotMeta(
                vm_name=spec.name, profile=spec.profile.name, backend="qemu", memory_bytes=spec.memory_bytes,
                cpus=spec.cpus, ram_mode="file" if file_mode else "stream", ram_size=ram_size,
                state_offset=state_off, state_length=state_len, machine=inst.machine, accel=inst.accel,
                kernel=str(inst.kernel), cmdline=inst.cmdline, vmm_version=qemu_version(inst.vmm.qemu_binary()),
                created_unix_ns=time.time_ns(), extra=dict(extra))
            size = snapfile.append_meta(fd, meta, snapfile.align(state_off + state_len, 8))
        finally:
            os.close(fd)
        if tmp != final_tmp:
            await asyncio.to_thread(_copy_whole, tmp, final_tmp, size)
            os.unlink(tmp)
        os.replace(final_tmp, path)
        return size
    except BaseException:
        for p in (tmp, final_tmp, state_tmp):
            try:
                os.unlink(p)
            except OSError:
                pass
        raise
    finally:
        if file_mode:
            try:
                os.unlink(state_tmp)
            except OSError:
                pass


def _device(p: Path) -> int:
    try:
        return os.stat(p).st_dev
    except OSError:
        return -1


def _copy_whole(src: Path, dst: Path, size: int) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        ram_mod.copy_data(src, fd, size)
    finally:
        os.close(fd)


def _append_file(src: Path, dst_fd: int, offset: int) -> int:
    n = 0
    with open(src, "rb") as f:
        while True:
            buf = f.read(1 << 20)
            if not buf:
                return n
            os.pwrite(dst_fd, buf, offset + n)
            n += len(buf)


async def _start_incoming(vmm: QemuVmm, spec: VmSpec, path: Path, meta: snapfile.SnapshotMeta) -> QemuInstance:
    """A QEMU waiting for `path`'s state (`-incoming defer`), QMP connected, capabilities set."""
    from .backend import QemuInstance, _cids

    if meta.backend != "qemu":
        raise snapfile.SnapshotFileError(path, f"was taken on the {meta.backend} backend; it cannot be restored "
                                               "into a QEMU guest")
    qemu = vmm.qemu_binary()
    kernel = Path(meta.kernel)
    if not kernel.is_file():
        raise VmmError(f"restore from `{path}`: the snapshot's kernel `{kernel}` is gone (QEMU needs the same "
                       "kernel's option ROM layout to accept the snapshot)")
    cid = next(_cids)
    scratch = vmm._scratch_root() / f"vm-{cid}"
    file_mode = meta.ram_mode == "file"
    ram_file: Path | None = None
    ram_path: Path | None
    if file_mode:
        ram_path, share = Path(path).resolve(), False
    else:
        d = ram_mod.ram_dir(meta.memory_bytes)
        ram_file = (d / f"vm-{cid}.ram") if d is not None else None
        ram_path, share = ram_file, True
    cfg = argv_mod.QemuConfig(
        qemu=qemu, machine=meta.machine, accel=meta.accel, memory_bytes=meta.memory_bytes, cpus=meta.cpus,
        kernel=kernel, initrd=None, cmdline=meta.cmdline, scratch=scratch, ram_path=ram_path, ram_share=share,
        incoming=True, disks=vmm._disks(spec), nics=list(spec.nics),
        extra=[a.replace("{scratch}", str(scratch)) for a in vmm.extra_args])
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    timeout = spec.agent_boot_timeout or spec.profile.agent_boot_timeout or vmm.boot_timeout or 30.0
    proc, qmp_sock, argv = process.spawn_qemu(cfg.with_qmp_fd, stderr_path=scratch / "qemu.stderr", cwd=scratch)
    (scratch / "qemu.argv").write_text(shlex.join(argv) + "\n")
    inst = QemuInstance(vmm, spec, cid, proc, scratch, meta.accel, timeout, qmp_sock)
    inst.machine, inst.kernel, inst.cmdline = meta.machine, kernel, meta.cmdline
    inst.ram_file, inst.ram_shared = ram_file, share
    inst.hotplug = HotplugSlots(meta.machine, cfg.hotplug_ports)
    inst.record_boot_disks(cfg.disks)
    try:
        await inst._qmp_connect(min(5.0, timeout))
        await _set_capabilities(inst, file_mode)
    except BaseException as exc:
        detail = inst._failure_text(exc, timeout)
        await inst._kill()
        if isinstance(exc, (ProviumError, OSError, asyncio.TimeoutError, QmpError)):
            raise VmmError(f"restore from `{path}` failed: {detail}") from None
        raise
    return inst


def _standby_key(spec: VmSpec, path: Path) -> tuple[str, str, int]:
    st = os.stat(path)
    return (spec.name, str(Path(path).resolve()), st.st_mtime_ns)


async def prestart(vmm: QemuVmm, spec: VmSpec, path: Path) -> None:
    """Start, ahead of time, the QEMU the next restore of `spec`'s VM from `path` will use.

    reset_between_tests restores the same baseline after every test; QEMU's own
    start-up (process, machine, QMP) is then paid while the test runs instead of
    during the reset.  A standby is used once, replaced by the next prestart, and
    killed with the backend."""
    key = _standby_key(spec, path)
    old = vmm._standby.pop(key, None)
    if old is not None:
        await old.discard()
    meta = snapfile.read_meta(path)
    inst = await _start_incoming(vmm, spec, path, meta)
    vmm._instances.add(inst)
    vmm._standby[key] = inst


async def restore(vmm: QemuVmm, spec: VmSpec, path: Path, meta: snapfile.SnapshotMeta) -> QemuInstance:
    """Start a QEMU that resumes the guest saved in `path`; returns once its agent answered."""
    started = time.monotonic()
    inst = None
    try:
        inst = vmm._standby.pop(_standby_key(spec, path), None)
    except OSError:
        inst = None
    if inst is not None and (inst.proc.poll() is not None or inst._closed):
        await inst.discard()
        inst = None
    if inst is None:
        inst = await _start_incoming(vmm, spec, path, meta)
    else:
        vmm._instances.discard(inst)
        inst.spec = spec
    timeout = inst.boot_timeout
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        src = (f"exec:dd if={shlex.quote(str(Path(path).resolve()))} bs=1M iflag=skip_bytes,count_bytes "
               f"skip={meta.state_offset} count={meta.state_length} status=none")
        mark = inst.qmp.mark()
        await inst.qmp.execute("migrate-incoming", {"uri": src})
        await _wait_migration(inst, f"restore from `{path}`", mark, min(MIGRATE_TIMEOUT, timeout))
        await inst.qmp.execute("cont")
        inst.client = await inst._connect_agent(deadline)
    except BaseException as exc:
        detail = inst._failure_text(exc, timeout)
        await inst._kill()
        if isinstance(exc, (ProviumError, OSError, asyncio.TimeoutError, QmpError)):
            raise VmmError(f"restore from `{path}` failed: {detail}") from None
        raise
    inst.boot_seconds = time.monotonic() - started
    vmm._instances.add(inst)
    return inst

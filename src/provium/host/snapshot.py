"""Single-VM snapshots: the Snapshot handle, the preconditions, and the hooks.

`VM.snapshot()` / `VM.restore()` only delegate here.  The file itself is
written by the backend (`VmInstance.snapshot`, format `vmm/snapfile.py`); this
module decides whether a snapshot may be taken, where it goes, and how a VM
object takes over a restored instance.

Preconditions (refusals, never auto-closing anything):
* state: `booted` or `paused` to snapshot; `created` to restore (a restore in
  place, used by `reset_between_tests`, takes a booted/paused VM);
* quiescence: nothing registered in the VM's handle registry
  (`host/registry.py`): open files, tails, fd/process/console streams, and
  anything else that registers there (a NIC capture registers as a stream).
  The error counts files and streams and names each with its creation site.

Extension point for per-VM state (attached disks' images, ...): register a
`VmSnapshotHook` with `register_vm_hook(name, hook)`.  At snapshot time
`hook.save(vm, snapshot_path)` returns JSON-able data (or None: nothing to keep)
stored in the file's metadata under `extra[name]`; at restore time
`hook.restore(vm, data, spec, snapshot_path)` gets that data back before the
VMM starts and returns the VmSpec to launch with (e.g. with disks added), so
the device layout matches the saved one.  Hooks run in registration order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StateError
from ..log import timed
from ..vmm import snapfile
from ..vmm.base import Unimplemented, VmSpec
from .pynames import python_names
from .errors import ArgumentError, ProviumError, VmError, WrongState
from .registry import ResourceMeta
from .values import type_name

if TYPE_CHECKING:
    from .vm import VM


class SnapshotError(VmError, StateError):
    """A snapshot or restore was refused or failed; the message says which VM and why."""


class VmSnapshotHook(Protocol):
    def save(self, vm: VM, snapshot_path: Path) -> Any: ...

    def restore(self, vm: VM, data: Any, spec: VmSpec, snapshot_path: Path) -> VmSpec: ...


_VM_HOOKS: dict[str, VmSnapshotHook] = {}


def register_vm_hook(name: str, hook: VmSnapshotHook) -> None:
    """Add per-VM snapshot state under `name` (see the module docstring)."""
    _VM_HOOKS[name] = hook


@python_names
class Snapshot:
    """A single-VM snapshot file: a thin handle over its path."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._path = os.path.abspath(os.fspath(path))

    @property
    def path(self) -> str:
        return self._path

    def size(self) -> int:
        """File size in bytes (apparent size); 0 if the file no longer exists."""
        try:
            return os.stat(self._path).st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SnapshotError(f"snapshot `{self._path}`: stat failed: {exc.strerror or exc}") from None

    def delete(self) -> None:
        """Remove the file (and the disk images saved beside it); a missing file is fine."""
        shutil.rmtree(self._path + ".disks", ignore_errors=True)  # host/disksnap.py
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SnapshotError(f"snapshot `{self._path}`: delete failed: {exc.strerror or exc}") from None

    def __str__(self) -> str:
        return f"snapshot({self._path})"

    __repr__ = __str__


def default_path() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"provium-snap-{os.getpid()}-{time.time_ns()}.bin"


def blockers_text(subject: str, files: list[ResourceMeta], streams: list[ResourceMeta]) -> str:
    lines = [f"{subject}: {len(files)} open file handle(s), {len(streams)} open stream(s)"]
    lines += [f"  - {m.describe()}" for m in (*files, *streams)]
    lines.append("  Close streams before snapshotting.")
    return "\n".join(lines)


def check_quiescent(vm: VM) -> None:
    files, streams = vm.open_resources()
    if files or streams:
        raise SnapshotError(blockers_text(f"vm:snapshot() failed for `{vm.name}`", files, streams))


def path_arg(path: Any, method: str) -> Path | None:
    if path is None:
        return None
    if isinstance(path, Path):
        path = str(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise ArgumentError(f"{method}: path must be a non-empty string, got {type_name(path)}")
    return Path(os.path.abspath(os.path.expanduser(path)))


async def asnapshot(vm: VM, path: Path | None = None) -> Snapshot:
    if vm.state not in ("booted", "paused"):
        raise WrongState(vm.name, vm.state, "snapshot")
    check_quiescent(vm)
    spec = getattr(vm, "_spec", None)
    if spec is not None and getattr(spec, "shares", None):
        from .shares import snapshot_refusal

        raise SnapshotError(snapshot_refusal(vm.name, spec.shares))
    target = path or default_path()
    if target.is_dir():
        raise ArgumentError(f"vm:snapshot: `{target}` is a directory (give a file path)")
    if not target.parent.is_dir():
        raise ArgumentError(f"vm:snapshot: directory `{target.parent}` does not exist")
    # The hooks copy state the guest can change (disk images): stop the guest first, so
    # that state and the memory saved after it are of the same moment.
    with timed(vm.log, f"snapshot to {target}"):
        await _save(vm, target)
    return Snapshot(target)


async def _save(vm: VM, target: Path) -> None:
    stopped_here = False
    if vm.state == "booted":
        try:
            await vm.instance.pause()
            stopped_here = True
        except Unimplemented:
            pass  # the local backend: no guest runs, nothing can change under the copy
    try:
        extra = {}
        for name, hook in _VM_HOOKS.items():
            data = hook.save(vm, target)
            if data is not None:
                extra[name] = data
        await vm.instance.snapshot(target, extra)
    except ProviumError:
        raise
    except Exception as exc:  # noqa: BLE001 - any VMM failure is this snapshot's story
        if not vm.instance.alive():
            vm._mark_dead()
        raise SnapshotError(f"vm:snapshot() failed for `{vm.name}`: {exc}") from None
    finally:
        if stopped_here and vm.instance.alive():
            await vm.instance.resume()


def source_path(src: Any, method: str = "vm:restore") -> Path:
    if isinstance(src, Snapshot):
        return Path(src.path)
    if isinstance(src, (str, Path)):
        p = path_arg(src, method)
        assert p is not None
        return p
    raise ArgumentError(f"{method}: expected snapshot|string, got {type_name(src)}")


async def arestore(vm: VM, src: Any, *, reset: bool = False,
                   spec_hook: Callable[[VmSpec], VmSpec] | None = None) -> None:
    """Resume the guest saved in `src` (Snapshot or path) as `vm`.

    A `created` (never booted) VM starts as the saved guest.  A `booted` or
    `paused` VM is rolled back in place: its guest is replaced by the saved one,
    and its handles (files, processes, workers) from before refuse to act, since
    they may not exist in the saved guest.  `reset=True` (reset_between_tests)
    also takes a `shutdown` or `dead` VM back, and keeps its handles valid: the
    baseline was taken with none open and test-scope ones are closed first, so
    what is left was made in exactly the state being restored."""
    path = source_path(src)
    allowed = ("booted", "paused", "shutdown", "dead") if reset else ("created", "booted", "paused")
    if vm.state not in allowed:
        raise WrongState(vm.name, vm.state, "restore")
    in_place = vm.state != "created"
    meta = snapfile.read_meta(path)
    session = vm.session
    if meta.backend != session.vmm.name:
        raise snapfile.SnapshotFileError(path, f"was taken on the {meta.backend} backend; this run uses "
                                               f"--vmm {session.vmm.name}")
    spec = replace(vm.boot_spec(), memory_bytes=meta.memory_bytes, cpus=meta.cpus)
    for name, hook in _VM_HOOKS.items():
        if name in meta.extra:
            spec = hook.restore(vm, meta.extra[name], spec, path)
    if spec_hook is not None:
        spec = spec_hook(spec)
    old = vm.instance if in_place else None
    started = time.monotonic_ns()

    async def drop_old() -> None:
        if old is not None:
            try:
                await old.discard()
            except Exception:  # noqa: BLE001, S110
                pass  # it is being replaced; a VMM that fails to stop it must not block the reset

    try:
        # The old guest goes while the new one starts: they share nothing (own scratch
        # dirs, sockets and RAM mappings), and a reset costs one of the two, not both.
        with timed(vm.log, f"restore from {path}" + (" (in place)" if in_place else "")):
            _, inst = await asyncio.gather(drop_old(), session.vmm.restore(spec, path))
    except ProviumError:
        if old is not None:
            vm._mark_dead()
        raise
    except Exception as exc:  # noqa: BLE001 - any VMM failure is this restore's story
        if old is not None:
            vm._mark_dead()
        raise SnapshotError(f"vm:restore failed for `{vm.name}`: {exc}") from None
    vm._adopt(inst, spec, started, keep_handles=reset and meta.ram_mode != "none")


def copy_snapshot(src: Path, dst: Path) -> None:
    """Copy a snapshot file keeping its holes (temp name + rename)."""
    from ..vmm.qemu.ram import copy_data

    tmp = snapfile.write_tmp_name(dst)
    try:
        size = os.stat(src).st_size
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            copy_data(src, fd, size)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

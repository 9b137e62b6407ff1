"""A VM's disks: the `Disk` objects a test holds, and `VmDisks`, which owns their files.

Every disk of a VM has one `Disk` object, whatever path it came from (profile,
boot option, `attach_disk`), and every handle to it is that object, so faults and
the detached flag are per disk, not per handle (the reference gives each lookup a
fresh handle with its own faults; see docs/differences.md).

A `mediated` disk is served to QEMU by provium's NBD server (`disk/nbd.py`): its
faults reach the guest, and a power cut drops the guest's unflushed writes.  Any
disk's host-side sector I/O (`read_sectors`/`write_sectors`) goes through the same
`BlockStore` as the guest's requests, on the session loop, so both see one view;
faults injected on an unmediated disk affect only that host-side view.

Owner: `VmDisks` (one per VM) owns the VM's disk directory, the images it created
there, the stores and the NBD servers; `close()` (called when the VM shuts down)
stops them and removes the directory.  `path` images are the user's and stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..disk import image as disk_image
from ..disk.faults import MAX_DELAY, MODES, Fault, Faults
from ..disk.nbd import NbdServer
from ..disk.spec import parse_disk
from ..disk.store import SECTOR, BlockStore
from ..vmm.base import DiskSpec, VmmError
from . import rootdisk
from .pynames import python_names
from .errors import ArgumentError, VmError
from .states import RUNNING
from .execargs import to_bytes
from .values import parse_duration, type_name

if TYPE_CHECKING:
    from ..config import Profile

log = logging.getLogger("provium.disk")

ATTACH_DEFAULT_SIZE = 4 << 30  # the modelled size of an attach_disk without an image
MAX_IO = 64 << 20  # one host-side read or write
MAX_OFFSET_SECTORS = (1 << 63) // SECTOR
ATTACH_KEYS = ("id", "image", "size", "scratch", "template", "readonly", "mediated")
FAULT_OPTS = ("delay", "after", "start", "count")


class DiskError(VmError, VmmError):
    """A disk operation failed; the message starts with the method (``disk:read_sectors: ...``)."""


class DiskIoError(DiskError):
    """A host-side sector operation failed with an I/O error (an injected EIO or the file's)."""

    def __init__(self, message: str, errno_: int = errno.EIO) -> None:
        self.errno = errno_
        super().__init__(message)


def _uint(v: Any, method: str, what: str) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        shown = v if isinstance(v, (int, float)) and not isinstance(v, bool) else type_name(v)
        raise ArgumentError(f"disk:{method}: `{what}` must be a non-negative integer, got {shown}")
    return v


@python_names
class Disk:
    """One disk of one VM.  Sectors are 512 bytes; offsets and counts are in sectors."""

    def __init__(self, owner: VmDisks, spec: DiskSpec, *, modelled_size: int | None = None) -> None:
        self._owner = owner
        self.spec = spec
        self.faults = Faults()
        self.store: BlockStore | None = None
        self.server: NbdServer | None = None
        self.modelled_size = modelled_size
        self.detached = False
        self.plugged = False  # the guest has it (boot or hot-plug)
        if spec.image and spec.format == "raw":
            try:
                self.store = BlockStore(spec.image, readonly=False, write_back=spec.mediated)
            except PermissionError:
                if not spec.readonly:
                    raise
                # A read-only disk on a file we may not write: the test's writes then fail.
                self.store = BlockStore(spec.image, readonly=True, write_back=spec.mediated)

    # ---- identity ------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def image(self) -> str | None:
        return self.spec.image

    @property
    def mediated(self) -> bool:
        return self.spec.mediated

    def __repr__(self) -> str:
        return f"disk({self.id} vm={self._owner.vm_name}{' detached' if self.detached else ''})"

    __str__ = __repr__

    def _run(self, coro):
        return self._owner.session.run(coro)

    # ---- size and sectors ----------------------------------------------------------

    def size(self) -> int:
        """Bytes: the image's live size, or the modelled size of an image-less disk."""
        if self.store is not None:
            try:
                return self.store.size()
            except OSError:
                pass
        if self.image:
            try:
                return os.stat(self.image).st_size
            except OSError:
                pass
        return self.modelled_size if self.modelled_size is not None else 0

    def _ready(self, method: str) -> BlockStore:
        if self.detached:
            raise DiskError(f"disk:{method}: disk is detached")
        if self.spec.format != "raw":
            raise DiskError(f"disk:{method}: disk `{self.id}` is a {self.spec.format} copy-on-write overlay (the "
                            "guest's root disk), not a raw image; host-side sector I/O works on raw disks only")
        if self.store is None:
            if not self.image:
                raise DiskError(f"disk:{method}: no backing image (this disk was attached without `image`; "
                                "give attach_disk an `image`, `scratch` or `template`)")
            raise DiskError(f"disk:{method}: disk `{self.id}` was closed with its VM (its image `{self.image}` "
                            "is not served any more)")
        return self.store

    def read_sectors(self, offset: Any, count: Any) -> bytes:
        """`count` sectors from sector `offset`; fewer bytes at the end of the image."""
        offset = _uint(offset, "read_sectors", "offset")
        count = _uint(count, "read_sectors", "count")
        if offset > MAX_OFFSET_SECTORS:
            raise ArgumentError(f"disk:read_sectors: offset {offset} is beyond any disk (sectors of 512 bytes)")
        if count * SECTOR > MAX_IO:
            raise ArgumentError(f"disk:read_sectors: {count} sectors is more than one call reads "
                                f"(at most {MAX_IO // SECTOR})")
        return self._run(self._io("read", offset * SECTOR, count * SECTOR, None))

    def write_sectors(self, offset: Any, data: Any) -> None:
        """Write `data` verbatim at sector `offset` (any length; may extend the image)."""
        offset = _uint(offset, "write_sectors", "offset")
        data = to_bytes(data, "disk:write_sectors", "data")
        if offset > MAX_OFFSET_SECTORS:
            raise ArgumentError(f"disk:write_sectors: offset {offset} is beyond any disk (sectors of 512 bytes)")
        if len(data) > MAX_IO:
            raise ArgumentError(f"disk:write_sectors: {len(data)} bytes is more than one call writes (at most {MAX_IO})")
        self._run(self._io("write", offset * SECTOR, len(data), bytes(data)))

    async def _io(self, kind: str, offset: int, length: int, data: bytes | None):
        method = "read_sectors" if kind == "read" else "write_sectors"
        store = self._ready(method)
        verdict = self.faults.check(kind, offset, length)
        if verdict.fail:
            raise DiskIoError(f"disk:{method}: EIO (fault_inject)")
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
            if self.faults.failing_now(kind, offset, length):
                raise DiskIoError(f"disk:{method}: EIO (fault_inject, set during slow {kind})")
            store = self._ready(method)  # detached while we slept
        try:
            if kind == "read":
                out = store.read(offset, length)
            else:
                store.host_write(offset, data or b"")
                out = None
        except OSError as exc:
            raise DiskIoError(f"disk:{method}: {exc.strerror or exc} (image `{self.image}`)",
                              exc.errno or errno.EIO) from exc
        if self.faults.failing_now(kind, offset, length):
            raise DiskIoError(f"disk:{method}: EIO (fault_inject, set during I/O)")
        return out

    # ---- faults --------------------------------------------------------------------

    def fault_inject(self, mode: Any, opts: Mapping | None = None) -> None:
        """Turn a fault mode on (modes combine).  `opts`: `delay` (slow), `after` (n requests
        still succeed first), `start`+`count` (only these sectors fail)."""
        if not isinstance(mode, str) or mode not in MODES:
            shown = mode if isinstance(mode, str) else type_name(mode)
            raise ArgumentError(f"disk:fault_inject: unknown mode `{shown}` (valid: {', '.join(MODES)})")
        if opts is not None and not isinstance(opts, Mapping):
            raise ArgumentError(f"disk:fault_inject: options must be a table, got {type_name(opts)}")
        opts = dict(opts or {})
        extra = sorted(str(k) for k in opts if k not in FAULT_OPTS)
        if extra:
            raise ArgumentError(f"disk:fault_inject: unknown option `{extra[0]}` (valid: {', '.join(FAULT_OPTS)})")
        kw: dict[str, Any] = {}
        if opts.get("delay") is not None:
            if mode != "slow":
                raise ArgumentError(f"disk:fault_inject: `delay` applies to mode `slow`, not `{mode}`")
            d = parse_duration(opts["delay"], "disk:fault_inject delay")
            assert d is not None
            if d > MAX_DELAY:
                raise ArgumentError(f"disk:fault_inject: delay {d:g}s is too long (at most {MAX_DELAY:g}s)")
            kw["delay"] = d
        if mode == "slow" and any(opts.get(k) is not None for k in ("after", "start", "count")):
            raise ArgumentError("disk:fault_inject: `after`, `start` and `count` apply to eio_read/eio_write, not slow")
        if opts.get("after") is not None:
            kw["after"] = _at_least_1(opts["after"], "fault_inject", "after")
        if (opts.get("start") is None) != (opts.get("count") is None):
            raise ArgumentError("disk:fault_inject: give `start` and `count` together (a sector range)")
        if opts.get("start") is not None:
            kw["start"] = _uint(opts["start"], "fault_inject", "start")
            kw["count"] = _at_least_1(opts["count"], "fault_inject", "count")
        self._on_loop(lambda: self.faults.inject(Fault(mode, **kw)))

    def clear_faults(self) -> None:
        self._on_loop(self.faults.clear)

    def active_faults(self) -> list[str]:
        return self.faults.active()

    def _on_loop(self, fn) -> None:
        async def call():
            fn()
        self._run(call())

    def _need_mediated(self, method: str) -> None:
        if not self.mediated:
            raise DiskError(f"disk:{method}: disk `{self.id}` is not mediated; faults the guest sees need the "
                            "disk declared with `mediated = true` (served by provium's NBD server)")

    def fail_reads(self) -> None:
        """Every guest read fails with EIO (and host-side reads too) until clear_faults."""
        self._need_mediated("fail_reads")
        self.fault_inject("eio_read")

    def fail_after(self, n: Any) -> None:
        """The next n reads and the next n writes succeed; every one after fails with EIO."""
        self._need_mediated("fail_after")
        n = _at_least_1(n, "fail_after", "n")
        self.fault_inject("eio_read", {"after": n})
        self.fault_inject("eio_write", {"after": n})

    def fail_range(self, start: Any, count: Any) -> None:
        """Reads and writes touching sectors [start, start+count) fail with EIO."""
        self._need_mediated("fail_range")
        start = _uint(start, "fail_range", "start")
        count = _at_least_1(count, "fail_range", "count")
        self.fault_inject("eio_read", {"start": start, "count": count})
        self.fault_inject("eio_write", {"start": start, "count": count})

    def power_cut(self) -> int:
        """Drop every write the guest has not flushed; returns the number of sectors lost.
        Flushed (and FUA) writes survive.  The VM must be booted or paused."""
        self._need_mediated("power_cut")
        self._owner.require_running("power_cut_disk")
        if self.detached or self.store is None:
            raise DiskError("disk:power_cut: disk is detached")

        async def cut() -> int:
            assert self.store is not None
            return self.store.power_cut()
        return self._run(cut())

    # ---- attachment ----------------------------------------------------------------

    def is_detached(self) -> bool:
        return self.detached

    def detach(self) -> None:
        """Unplug from the guest (waits until the guest has let it go) and stop sector I/O.
        Idempotent; a disk the guest never had is only marked detached."""
        self._run(self._owner.adetach(self))


def _at_least_1(v: Any, method: str, what: str) -> int:
    n = _uint(v, method, what)
    if n < 1:
        raise ArgumentError(f"disk:{method}: `{what}` must be at least 1, got {n}")
    return n


class VmDisks:
    """The disks of one VM and everything they hold (files, stores, NBD servers)."""

    def __init__(self, vm) -> None:
        self._vm = vm
        self.vm_name: str = vm.name
        self.session = vm.session
        self._disks: dict[str, Disk] = {}
        self._dir: Path | None = None
        self._seq = itertools.count()
        self._boot_ids: list[str] = []  # the disks on the VM's command line, in order
        self._bg: set[asyncio.Task] = set()  # releases of disks a restore replaced

    def require_running(self, action: str) -> None:
        self._vm._require(action, RUNNING)

    def _directory(self) -> Path:
        if self._dir is None:
            self._dir = disk_image.vm_dir()
        return self._dir

    # ---- lookup --------------------------------------------------------------------

    def get(self, did: Any) -> Disk:
        if not isinstance(did, str):
            raise ArgumentError(f"vm:disk: id must be a string, got {type_name(did)}")
        try:
            return self._disks[did]
        except KeyError:
            raise DiskError(f"vm:disk: no disk `{did}` attached to vm `{self.vm_name}`") from None

    def all(self) -> list[Disk]:
        return list(self._disks.values())

    # ---- boot ----------------------------------------------------------------------

    async def prepare(self, profile: Profile, boot_disks: list[DiskSpec]) -> list[DiskSpec]:
        """Resolve the profile's disks, then the boot's: check ids, make images, start
        NBD servers.  Returns the specs the VMM attaches, profile disks first.  On error
        everything made so far is undone."""
        seen: set[str] = set()
        plan: list[tuple[DiskSpec, Path | None]] = []
        root = await rootdisk.spec_for(self._vm, profile)
        if root is not None:
            plan.append((root, None))
            seen.add(root.id)
        for d in profile.disks:
            if d.id in seen:
                raise DiskError(f"disk id `{d.id}` is the `{profile.name}` guest's root disk; give the profile's "
                                "disk a different id")
            plan.append((d, Path(profile.base_dir)))
            seen.add(d.id)
        for d in boot_disks:
            if d.id in seen:
                raise DiskError(f"disk id `{d.id}` is already attached by the profile (or is its root disk); give "
                                "the boot's disk a different id")
            seen.add(d.id)
            plan.append((d, None))
        out: list[DiskSpec] = []
        try:
            for d, base in plan:
                staged = self._disks.get(d.id)
                # attach_disk on a created VM made the disk already
                reuse = staged is not None and staged.spec is d and staged.store is not None
                disk = staged if reuse and staged is not None else await self._make(d, base)
                disk.plugged = True
                out.append(disk.spec)
            self._boot_ids = [d.id for d in out]
        except BaseException:
            await self.close()
            raise
        return out

    async def _make(self, d: DiskSpec, base: Path | None, *, modelled: int | None = None) -> Disk:
        """Create the image (scratch/template), open it, start its NBD server if mediated."""
        n = next(self._seq)
        if d.source == "overlay":
            image = self._directory() / f"{n}.qcow2"
            await rootdisk.create_overlay(d, image)
        elif d.source == "path":
            path = Path(os.path.expanduser(d.path or ""))
            if base is not None and not path.is_absolute():
                path = base / path
            if not path.is_file():
                raise DiskError(f"disk `{d.id}`: no image at `{path}` (provium does not create one)")
            image = path
        elif d.source == "scratch":
            image = self._directory() / f"{n}.img"
            try:
                await asyncio.to_thread(disk_image.create_scratch, image, d.scratch or 0)
            except OSError as exc:
                raise DiskError(f"disk `{d.id}`: cannot create a {d.scratch}-byte scratch image: "
                                f"{exc.strerror or exc}") from exc
        else:
            template = Path(os.path.expanduser(d.template or ""))
            if base is not None and not template.is_absolute():
                template = base / template
            if not template.is_file():
                raise DiskError(f"disk `{d.id}`: no template at `{template}`")
            image = self._directory() / f"{n}.img"
            try:
                await asyncio.to_thread(disk_image.copy_template, template, image)
            except OSError as exc:
                raise DiskError(f"disk `{d.id}`: cannot copy template `{template}`: {exc.strerror or exc}") from exc
        sock = str(self._directory() / f"{n}.nbd") if d.mediated else None
        spec = dataclasses.replace(d, image=str(image.resolve()), nbd_socket=sock)
        try:
            disk = Disk(self, spec, modelled_size=modelled)
        except OSError as exc:
            raise DiskError(f"disk `{d.id}`: cannot open `{image}`: {exc.strerror or exc}") from exc
        if sock is not None:
            assert disk.store is not None
            disk.server = NbdServer(sock, d.id, disk.store, disk.faults)
            await disk.server.start()
        old = self._disks.get(d.id)
        if old is not None:
            await self._release(old)
        self._disks[d.id] = disk
        return disk

    # ---- hot-plug ------------------------------------------------------------------

    def attach(self, opts: Any) -> Disk:
        return self.session.run(self.aattach(opts))

    async def aattach(self, opts: Any) -> Disk:
        """`vm:attach_disk{id=, image= | scratch= | template=, size=, readonly=, mediated=}`.

        On a booted (or paused) VM a disk with an image is hot-plugged and the guest sees
        a new /dev/vdX; on a created VM it joins the boot's disks; without an image it is
        a host-side record with a modelled `size` (the reference's form)."""
        if opts is None:
            opts = {}
        if not isinstance(opts, Mapping):
            raise ArgumentError(f"vm:attach_disk: expected a table of options, got {type_name(opts)}")
        extra = sorted(str(k) for k in opts if k not in ATTACH_KEYS)
        if extra:
            raise ArgumentError(f"vm:attach_disk: unknown option `{extra[0]}` (valid: {', '.join(ATTACH_KEYS)})")
        state = self._vm.state
        if state not in ("created", "booted", "paused"):
            self.require_running("attach_disk")
        did = opts.get("id")
        if did is None:
            did = f"attached-{self.vm_name}"
        table = {k: v for k, v in opts.items() if k not in ("image", "size")}
        table["id"] = did
        size = opts.get("size")
        if size is not None:
            from ..disk.spec import parse_size
            size = parse_size(size, "vm:attach_disk: `size`", ArgumentError)
        if opts.get("image") is not None:
            if opts.get("path") is not None:
                raise ArgumentError("vm:attach_disk: give `image` (the reference's name) or `path`, not both")
            table["path"] = opts["image"]
        if not any(table.get(k) is not None for k in ("path", "scratch", "template")):
            # A host-side record only: no image, a modelled size.
            spec = parse_disk({**table, "scratch": 1}, "vm:attach_disk", did, ArgumentError)
            spec = dataclasses.replace(spec, scratch=None, path=None)
            if spec.mediated:
                raise ArgumentError("vm:attach_disk: a `mediated` disk needs an `image`, `scratch` or `template`")
            old = self._disks.get(spec.id)
            if old is not None:
                await self._unplug(old)
                await self._release(old)
            disk = Disk(self, spec, modelled_size=size if size is not None else ATTACH_DEFAULT_SIZE)
            self._disks[spec.id] = disk
            return disk
        spec = parse_disk(table, "vm:attach_disk", did, ArgumentError)
        old = self._disks.get(spec.id)
        if old is not None and old.plugged and not old.detached:
            raise DiskError(f"vm:attach_disk: disk `{spec.id}` is attached to vm `{self.vm_name}`; "
                            "detach it first or use another id")
        if state == "created":
            disk = await self._make(spec, None, modelled=size)
            self._vm._stage_disk(disk.spec)
            return disk
        disk = await self._make(spec, None, modelled=size)
        inst = self._vm.instance
        try:
            await inst.attach_disk(disk.spec)
        except BaseException as exc:
            self._disks.pop(spec.id, None)
            await self._release(disk)
            if isinstance(exc, Exception) and not isinstance(exc, ArgumentError):
                text = str(exc)
                if f"`{spec.id}`" not in text:
                    text = f"disk `{spec.id}`: {text}"
                raise DiskError(f"vm:attach_disk: {text}") from exc
            raise
        disk.plugged = True
        return disk

    async def adetach(self, disk: Disk) -> None:
        if disk.detached:
            return
        await self._unplug(disk)
        disk.detached = True
        await self._release(disk)

    async def _unplug(self, disk: Disk) -> None:
        if not disk.plugged:
            return
        inst = self._vm.instance
        if self._vm.state == "paused":
            raise DiskError(f"disk:detach: vm `{self.vm_name}` is paused; resume it first (the guest has to "
                            f"release disk `{disk.id}` before it can go)")
        if inst is not None and self._vm.state == "booted":
            try:
                await inst.detach_disk(disk.id)
            except Exception as exc:
                raise DiskError(f"disk:detach: disk `{disk.id}` of vm `{self.vm_name}`: {exc}") from exc
        disk.plugged = False

    async def _release(self, disk: Disk) -> None:
        """Stop the server and close the store; remove an image provium made."""
        if disk.server is not None:
            await disk.server.close()
            disk.server = None
        if disk.store is not None:
            try:
                disk.store.flush()  # what a disk that loses power no more does with its cache
            except OSError:
                pass
            disk.store.close()
            disk.store = None

    # ---- snapshots (host/disksnap.py) -------------------------------------------

    def snapshot_entries(self) -> list[Disk]:
        """The disks a snapshot must carry, in command-line order; refuses what a restore
        could not rebuild (a restored QEMU starts with the boot disks only)."""
        disks = []
        for did in self._boot_ids:
            disk = self._disks.get(did)
            if disk is None or disk.detached or not disk.plugged:
                raise DiskError(f"disk `{did}` of vm `{self.vm_name}` was detached; a snapshot needs the VM's "
                                "boot disks in place (not yet supported)")
            disks.append(disk)
        for disk in self._disks.values():
            if disk.plugged and disk.id not in self._boot_ids:
                raise DiskError(f"disk `{disk.id}` of vm `{self.vm_name}` was hot-plugged; detach it before "
                                "snapshotting (hot-plugged disks in snapshots are not yet supported)")
        return disks

    def restore_disks(self, saved: list[tuple[DiskSpec, Path]]) -> list[DiskSpec]:
        """Synchronous (a snapshot restore hook runs on the loop thread without awaiting):
        replace this VM's disks with copies of the saved images, serve the mediated ones,
        and return the specs the restored QEMU attaches, in the saved order."""
        old, old_dir = list(self._disks.values()), self._dir
        self._disks, self._dir = {}, None
        if old or old_dir is not None:
            task = asyncio.get_running_loop().create_task(self._release_all(old, old_dir))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        out: list[DiskSpec] = []
        for spec, saved_image in saved:
            n = next(self._seq)
            image = self._directory() / f"{n}.{'img' if spec.format == 'raw' else spec.format}"
            disk_image.copy_template(saved_image, image)
            sock = str(self._directory() / f"{n}.nbd") if spec.mediated else None
            spec = dataclasses.replace(spec, image=str(image), nbd_socket=sock)
            disk = Disk(self, spec)
            if sock is not None:
                assert disk.store is not None
                disk.server = NbdServer(sock, spec.id, disk.store, disk.faults)
                disk.server.listen_now()
            disk.plugged = True
            self._disks[spec.id] = disk
            out.append(spec)
        self._boot_ids = [d.id for d in out]
        return out

    async def _release_all(self, disks: list[Disk], d: Path | None) -> None:
        for disk in disks:
            try:
                await self._release(disk)
            except Exception:
                log.exception("vm %s: closing disk %s", self.vm_name, disk.id)
        if d is not None:
            disk_image.remove_dir(d)

    async def close(self) -> None:
        """The VM is gone: stop every server, close every image, remove the directory."""
        if self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)
        for disk in list(self._disks.values()):
            try:
                await self._release(disk)
            except Exception:
                log.exception("vm %s: closing disk %s", self.vm_name, disk.id)
            disk.plugged = False
        if self._dir is not None:
            disk_image.remove_dir(self._dir)
            self._dir = None

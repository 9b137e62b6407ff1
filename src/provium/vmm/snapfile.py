"""The on-disk format of a single-VM snapshot file, shared by every backend.

Layout (version 1):

    [0, ram_size)                    guest RAM image, page for page (ram_mode "file"; sparse)
    [state_offset, +state_length)    the VMM's device state (QEMU: its migration stream)
    [meta_offset, +meta_length)      JSON metadata (`SnapshotMeta`)
    last 32 bytes                    trailer: b"PROVSNAP", u32 version, u32 flags,
                                     u64 meta_offset, u64 meta_length (little-endian)

The RAM comes first so that a restore can map the file itself as the guest's
RAM (QEMU `memory-backend-file,share=off`: private, copy-on-write; QEMU maps
the first `size` bytes and accepts a longer file).  Many VMs restored from one
file share its clean pages.  The trailer sits at the end, so a truncated file
has none and is recognised as such instead of hanging a VMM on a short stream.

Snapshot files are user data: whatever is wrong with one (missing, truncated,
foreign, a newer version, compressed) is a `SnapshotFileError` naming the file.
Files are always written under a temporary name next to the target and renamed
into place (`write_tmp_name`), so an interrupted snapshot leaves no partial file
under the real name.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArgumentError

MAGIC = b"PROVSNAP"
FORMAT_VERSION = 1
TRAILER = struct.Struct("<8sIIQQ")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PAGE = 4096
_tmp_ids = itertools.count(1)


class SnapshotFileError(ArgumentError):
    """A snapshot file cannot be used; the message names the file and why."""

    def __init__(self, path: str | os.PathLike, why: str) -> None:
        self.path = str(path)
        super().__init__(f"snapshot file `{path}`: {why}")


@dataclass(frozen=True)
class SnapshotMeta:
    vm_name: str
    profile: str
    backend: str  # "qemu" | "local"
    memory_bytes: int
    cpus: int
    ram_mode: str  # "file": RAM image at offset 0; "stream": RAM inside the state; "none" (local)
    ram_size: int
    state_offset: int
    state_length: int
    machine: str = ""
    accel: str = ""
    kernel: str = ""
    cmdline: str = ""
    vmm_version: str = ""
    created_unix_ns: int = 0
    # Per-VM state contributed by hooks (attached disks' images, ...): {hook name: data}.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, path: str | os.PathLike, raw: bytes) -> SnapshotMeta:
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SnapshotFileError(path, f"metadata is not valid JSON ({exc}); the file is damaged") from exc
        if not isinstance(d, dict):
            raise SnapshotFileError(path, "metadata is not a JSON object; the file is damaged")
        names = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise SnapshotFileError(path, f"metadata is incomplete ({exc}); the file is damaged") from exc


def write_tmp_name(path: Path) -> Path:
    """A temp name beside `path` (same filesystem, so the final rename is atomic);
    it starts with "." so directory scans skip it."""
    return path.parent / f".{path.name}.{os.getpid()}.{next(_tmp_ids)}.tmp"


def append_meta(fd: int, meta: SnapshotMeta, meta_offset: int) -> int:
    """Write the metadata and trailer at `meta_offset`; returns the file's final size."""
    raw = meta.to_json()
    os.pwrite(fd, raw, meta_offset)
    os.pwrite(fd, TRAILER.pack(MAGIC, FORMAT_VERSION, 0, meta_offset, len(raw)), meta_offset + len(raw))
    return meta_offset + len(raw) + TRAILER.size


def align(n: int, to: int = PAGE) -> int:
    return (n + to - 1) // to * to


def read_meta(path: str | os.PathLike) -> SnapshotMeta:
    """Validate `path` and return its metadata; never reads more than the trailer and meta."""
    if os.path.isdir(path):
        raise SnapshotFileError(path, "is a directory (a lab snapshot? use lab:restore)")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SnapshotFileError(path, "no such file") from None
    except IsADirectoryError:
        raise SnapshotFileError(path, "is a directory (a lab snapshot? use lab:restore)") from None
    except OSError as exc:
        raise SnapshotFileError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 4, 0)
        if head == ZSTD_MAGIC:
            raise SnapshotFileError(path, "is zstd-compressed (a fixture cache entry); decompress it first "
                                          "(zstd -d) or restore it through provium:vm_fixture")
        if size < TRAILER.size:
            raise SnapshotFileError(path, f"only {size} bytes: truncated or not a provium snapshot")
        magic, version, _flags, moff, mlen = TRAILER.unpack(os.pread(fd, TRAILER.size, size - TRAILER.size))
        if magic != MAGIC:
            raise SnapshotFileError(path, "not a provium snapshot (no trailer at the end: the file is truncated, "
                                          "or was not written by vm:snapshot)")
        if version != FORMAT_VERSION:
            raise SnapshotFileError(path, f"format version {version}; this provium reads version {FORMAT_VERSION}"
                                          " (take the snapshot again with this version)")
        if moff + mlen + TRAILER.size != size or mlen > 1 << 20:
            raise SnapshotFileError(path, "trailer points outside the file; the file is damaged")
        meta = SnapshotMeta.from_json(path, os.pread(fd, mlen, moff))
    finally:
        os.close(fd)
    if meta.state_offset + meta.state_length > moff or (meta.ram_mode == "file" and meta.ram_size > meta.state_offset):
        raise SnapshotFileError(path, "sections overlap; the file is damaged")
    if meta.ram_mode not in ("file", "stream", "none"):
        raise SnapshotFileError(path, f"unknown RAM layout `{meta.ram_mode}`")
    return meta

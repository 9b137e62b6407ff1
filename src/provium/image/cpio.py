"""A tiny, deterministic writer for SVR4 "newc" cpio archives (what the kernel unpacks).

Why our own instead of a library or the `cpio` tool: we need byte-identical output
for identical inputs (the archives are content-hash cached), entries that do not
exist on the host (device nodes, links into the guest's paths, files from memory),
and no root to create them.  The format is 110-byte ASCII headers and 4-byte padding;
the whole writer is smaller than the glue a library would need.
"""

from __future__ import annotations

import gzip
import io
import stat
import zlib
from dataclasses import dataclass

from .errors import ImageError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class CpioError(ImageError, ValueError):
    """An entry cannot be written (bad path, duplicate, ...)."""


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def norm_path(path: str, what: str = "path") -> str:
    """`/a/b` or `a/b` -> `a/b`.  Refuses `.`/`..` components and paths naming no file."""
    if not isinstance(path, str):
        raise CpioError(f"{what}: expected a string, got {type(path).__name__}")
    if "\0" in path:
        raise CpioError(f"{what} `{path}` contains a NUL byte")
    parts = [p for p in path.split("/") if p != ""]
    if any(p in (".", "..") for p in parts):
        raise CpioError(f"{what} `{path}` may not contain `.` or `..`")
    if not parts:
        raise CpioError(f"{what} `{path}` names no file")
    return "/".join(parts)


@dataclass
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class CpioWriter:
    """Collects entries, then `bytes()` renders the archive.

    Entries keep insertion order (the kernel creates them in archive order, so a
    directory must come before what it holds: `add_file` adds missing parents
    first).  All entries are owned by root with mtime 0, so output depends only on
    names, modes and contents.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __contains__(self, path: str) -> bool:
        return norm_path(path) in self._entries

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._entries:
                self._entries[d] = _Entry(d, stat.S_IFDIR | 0o755)

    def _add(self, entry: _Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None and not (stat.S_ISDIR(old.mode) and stat.S_ISDIR(entry.mode)):
            raise CpioError(f"cpio: `{entry.name}` added twice")
        self._parents(entry.name)
        self._entries[entry.name] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        name = norm_path(path)
        self._add(_Entry(name, stat.S_IFDIR | (mode & 0o7777)))

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        name = norm_path(path)
        self._add(_Entry(name, stat.S_IFREG | (mode & 0o7777), bytes(data)))

    def add_symlink(self, path: str, target: str) -> None:
        name = norm_path(path)
        self._add(_Entry(name, stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = norm_path(path)
        self._add(_Entry(name, stat.S_IFCHR | (mode & 0o7777), b"", (major, minor)))

    def __bytes__(self) -> bytes:
        out = io.BytesIO()
        for ino, e in enumerate(self._entries.values(), start=1):
            _write_entry(out, ino, e.name, e.mode, e.data, e.rdev)
        _write_entry(out, 0, TRAILER, 0, b"", (0, 0), nlink=1)
        return out.getvalue()


def _write_entry(out: io.BytesIO, ino: int, name: str, mode: int, data: bytes,
                 rdev: tuple[int, int], nlink: int | None = None) -> None:
    raw = name.encode() + b"\0"
    if nlink is None:
        nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
    header = MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header)
    out.write(raw)
    out.write(b"\0" * _pad4(len(header) + len(raw)))
    out.write(data)
    out.write(b"\0" * _pad4(len(data)))


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """gzip with a zero timestamp and no file name, so equal input gives equal output."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def align4(parts: list[bytes]) -> list[bytes]:
    """`parts` with NUL padding after each, so every part starts at a 4-byte offset.

    How the kernel reads an initrd made of several archives: NULs between them are
    skipped, and an uncompressed archive is recognised only at a 4-byte aligned
    offset of the whole image; compressed ones may start anywhere.
    """
    out: list[bytes] = []
    size = 0
    for part in parts:
        out.append(part)
        size += len(part)
        pad = _pad4(size)
        if pad:
            out.append(b"\0" * pad)
            size += pad
    return out


def read_initrd(data: bytes) -> list[tuple[str, int, bytes]]:
    """Every entry of an initrd made of concatenated archives (uncompressed newc or
    gzip'd, NUL padding between them), in the order the kernel unpacks them."""
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
        elif data[pos:pos + 2] == b"\x1f\x8b":
            d = zlib.decompressobj(wbits=31)
            out += parse(d.decompress(data[pos:]))
            pos = len(data) - len(d.unused_data)
        elif data[pos:pos + 6] == MAGIC:
            if pos % 4:
                raise CpioError(f"cpio: uncompressed archive at unaligned offset {pos}")
            entries, end = _parse_at(data, pos)
            out += entries
            pos = end
        else:
            raise CpioError(f"cpio: neither an archive nor padding at offset {pos}")
    return out


def parse(data: bytes) -> list[tuple[str, int, bytes]]:
    """Read an uncompressed newc archive back as (name, mode, data).  For tests and checks."""
    return _parse_at(data, 0)[0]


def _parse_at(data: bytes, pos: int) -> tuple[list[tuple[str, int, bytes]], int]:
    """(entries, offset after the trailer) of the archive starting at `pos`."""
    out: list[tuple[str, int, bytes]] = []
    while True:
        if data[pos:pos + 6] != MAGIC:
            raise CpioError(f"cpio: bad magic at offset {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += _pad4(pos)
        if name == TRAILER:
            return out, pos
        out.append((name, mode, data[pos:pos + size]))
        pos += size + _pad4(size)

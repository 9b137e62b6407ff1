"""Where built images live, and how they get there without torn files.

Every image is named by the sha256 of its inputs, so a cache hit is a file that
exists.  Writers go through a private temp name and `rename`, so a concurrent
reader sees either nothing or the whole file; if two writers race, both write
the same bytes and the last rename wins harmlessly.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from provium.fsutil import atomic_write as _atomic_write

from .cpio import align4

# Images are small next to fixtures, but each agent or kernel change makes new ones:
# a kind's images not used for this long are removed when a new one is built.
UNUSED_TTL = 3 * 24 * 3600


def default_cache_dir() -> Path:
    env = os.environ.get("PROVIUM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "provium"
    home = Path.home()
    if home.is_dir():
        return home / ".cache" / "provium"
    return Path("/tmp") / f"provium-cache-{os.getuid()}"


def image_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    base = Path(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir()
    d = base / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Hasher:
    """sha256 over labelled parts, so ("ab","c") and ("a","bc") never collide."""

    def __init__(self, kind: str) -> None:
        self._h = hashlib.sha256()
        self.add("kind", kind.encode())

    def add(self, label: str, data: bytes) -> "Hasher":
        self._h.update(b"%d:%s:%d:" % (len(label), label.encode(), len(data)))
        self._h.update(data)
        return self

    def add_file(self, label: str, path: str | os.PathLike) -> "Hasher":
        return self.add(label, file_digest(path))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


_digests: dict[tuple, bytes] = {}


def file_digest(path: str | os.PathLike) -> bytes:
    """sha256 of a file's contents (not its mtime: a rebuilt-but-identical input is a hit).

    Remembered per (inode, size, mtime) for the life of the process, since cache keys
    are computed on every boot and some inputs (libpython) are tens of MiB.
    """
    st = os.stat(path)
    key = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    d = _digests.get(key)
    if d is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d = _digests[key] = h.digest()
    return d


def atomic_write(path: Path, data: bytes | list[bytes], mode: int = 0o644) -> Path:
    """Write `data` (or the concatenation of its parts) to `path` via a temp name + rename.

    Images are readable by all by default, as a build's outputs usually are (a plain
    temp file would be owner-only).  Temp names start with "." so `prune` skips them.
    """
    return _atomic_write(path, data, mode=mode)


def concat_files(path: Path, sources: list[Path | bytes]) -> Path:
    """`path` := the sources (files or in-memory bytes) one after another, atomically.

    Each source starts at a 4-byte offset (NUL padding between them), which is where
    the kernel looks for an uncompressed archive in a concatenated initrd.
    """
    parts: list[bytes] = []
    for s in sources:
        parts.append(s if isinstance(s, (bytes, bytearray)) else Path(s).read_bytes())
    return atomic_write(path, align4(parts))


def use(path: Path) -> Path:
    """Mark a cache hit as used now (its mtime is the last use), for `prune`."""
    try:
        os.utime(path)
    except OSError:
        pass
    return path


def prune(directory: Path, prefix: str, keep: Path, ttl: float = UNUSED_TTL) -> None:
    """Delete `prefix*` files in `directory` unused for `ttl` seconds (never `keep`)."""
    now = time.time()
    try:
        entries = list(directory.glob(prefix + "*"))
    except OSError:
        return
    for p in entries:
        if p == keep or p.name.startswith("."):
            continue
        try:
            if now - p.stat().st_mtime > ttl:
                p.unlink()
        except OSError:
            pass

"""The image files provium makes for a VM's disks, in a directory it is handed.

`scratch` disks are created sparse (zero-filled, exactly the declared size, no
blocks used until written); `template` disks are a copy of the template, which is
only read.  A `path` disk is the user's file and is never made here.

Per-process root `$TMPDIR/provium-disks-<pid>/`; each VM gets a numbered directory
under it (short, because NBD socket paths live there and unix socket paths are
limited to 107 bytes).  Roots of processes that died without cleaning up (SIGKILL)
are swept when the next root is made.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from .. import runfiles

_counter = itertools.count(1)
_root: Path | None = None


def _sweep(parent: Path) -> None:
    runfiles.sweep_stale(parent, ("provium-disks-",))


def vm_dir() -> Path:
    """A fresh, private directory for one VM's disk files."""
    global _root
    if _root is None or not _root.is_dir() or not _root.name.endswith(f"-{os.getpid()}"):
        parent = Path(tempfile.gettempdir())
        if len(str(parent)) > 60:
            parent = Path("/tmp")
        _sweep(parent)
        _root = parent / f"provium-disks-{os.getpid()}"
        _root.mkdir(mode=0o700, exist_ok=True)
    d = _root / str(next(_counter))
    d.mkdir(mode=0o700)
    return d


def remove_dir(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    global _root
    if _root is not None and d.parent == _root:
        try:
            _root.rmdir()  # the last VM's directory: leave nothing behind
            _root = None
        except OSError:
            pass


def create_scratch(path: Path, size: int) -> None:
    with open(path, "xb") as f:
        f.truncate(size)


def copy_template(template: Path, path: Path) -> None:
    """Copy `template` to `path`, data extents only: holes stay holes (a sparse 1 GiB
    template with a few MiB in it costs a few MiB to copy)."""
    import errno

    with open(template, "rb") as src, open(path, "xb") as dst:
        fd = src.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                data_at = os.lseek(fd, off, os.SEEK_DATA)
                hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here on
                    break
                data_at, hole_at = off, size  # no SEEK_DATA here: copy the rest
            src.seek(data_at)
            dst.seek(data_at)
            left = hole_at - data_at
            while left > 0:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
            off = hole_at
        dst.truncate(size)

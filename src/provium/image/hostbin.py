"""A host program with the shared libraries it needs, as files for a guest's initramfs.

The built-in `linux` guest has no libc: a dynamically linked host binary copied in
alone fails with "No such file or directory" (its loader is missing).  We copy the
loader and every library `ldd` resolves for it (runtime.elf_deps, the same lookup
the agent's Python runtime uses) to the paths they have on the host, so the
binary's own PT_INTERP and library search find them unchanged in the guest.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ImageError
from .runtime import elf_deps

MAX_FILE = 512 << 20  # a boot file is held in memory while the initramfs segment is built


def read_host_file(path: Path, what: str) -> tuple[bytes, int]:
    """(content, permission bits) of a regular host file, following symlinks."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ImageError(f"{what}: host file `{path}`: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{what}: host file `{path}` is not a regular file")
    if st.st_size > MAX_FILE:
        raise ImageError(f"{what}: host file `{path}` is {st.st_size} bytes (at most {MAX_FILE})")
    try:
        return path.read_bytes(), stat.S_IMODE(st.st_mode)
    except OSError as exc:
        raise ImageError(f"{what}: host file `{path}`: {exc.strerror}") from exc


def libraries(path: Path, what: str) -> list[tuple[str, bytes, int]]:
    """(guest path, content, mode) of the loader and libraries `path` links, at their host paths.

    Empty for a static binary or a script.  A library the host cannot resolve is an error.
    """
    try:
        libs, loader = elf_deps(path)
    except ImageError as exc:
        raise ImageError(f"{what}: {exc}") from exc
    out = []
    for lib in ([loader] if loader else []) + libs:
        data, _ = read_host_file(lib, what)
        out.append((str(lib), data, 0o755))
    return out

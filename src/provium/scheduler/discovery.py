"""Finding test files: `*.test.lua` under the given paths, sorted, never following symlinks.

A path that is itself a `*.test.lua` file is taken as is.  `--filter` matches the
path relative to the root it was found under (a file given directly has the
relative path "" and so is dropped by any non-empty filter, as in the reference).

Only regular files are taken: a FIFO named `x.test.lua` would block the runner
that opens it, forever; it is skipped with a notice.  A name that is not valid
UTF-8 is run like any other: `Discovered.path` holds it as Python does (each
undecodable byte a surrogate escape, so the file can be opened), and every
report shows it through `fsutil.printable` (the byte as `\\xNN`).  A file
reached twice (`provium . ./a.test.lua`, overlapping roots, a symlink) runs once:
files are de-duplicated by real path, the first path found is kept.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fsutil import printable as printable  # re-exported: messages name paths with it

TEST_SUFFIX = ".test.lua"
FIXTURE_SUFFIX = ".fixture.lua"

# Literal fixture names in `vm_fixture("x")` / `lab_fixture('x')` calls (colon or dot form).
_FIXTURE_REF = re.compile(r"""\b(?:vm_fixture|lab_fixture)\s*\(\s*(?:[A-Za-z_][\w.]*\s*,\s*)?(["'])([^"'\n]*)\1""")


class DiscoveryError(ConfigError):
    """A path given on the command line does not exist or is not a test file/dir."""


@dataclass(frozen=True)
class Discovered:
    path: str  # as reported everywhere: the root joined with the walked relative path
    root: str
    rel: str  # relative to root ("" for a file given directly)


def _unusable(path: str) -> str | None:
    """Why `path` cannot be run as a test file, or None if it can."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat it: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def _walk(root: str, suffix: str, notices: list[str]) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(suffix):
                # normpath: a scan of "." reports `a.test.lua`, not `./a.test.lua`
                path = os.path.normpath(os.path.join(dirpath, name))
                why = _unusable(path)
                if why:
                    notices.append(f"skipping `{printable(path)}`: {why}")
                    continue
                found.append(path)
    return found


def discover(paths: list[str], *, filter: str | None = None, suffix: str = TEST_SUFFIX,
             notices: list[str] | None = None) -> list[Discovered]:
    """Every matching file under `paths`, sorted by path, each real file once.

    Files skipped (not regular, name not UTF-8) are described in `notices`.
    """
    notices = notices if notices is not None else []
    out: list[Discovered] = []
    for root in paths:
        if os.path.isfile(root) or (os.path.exists(root) and not os.path.isdir(root)):
            if not root.endswith(suffix):
                raise DiscoveryError(f"`{printable(root)}` is not a `*{suffix}` file or a directory")
            why = _unusable(root)
            if why:
                raise DiscoveryError(f"`{printable(root)}`: {why}")
            out.append(Discovered(path=root, root=root, rel=""))
            continue
        if not os.path.isdir(root):
            raise DiscoveryError(f"path `{printable(root)}` does not exist")
        for f in _walk(root, suffix, notices):
            out.append(Discovered(path=f, root=root, rel=os.path.relpath(f, root)))
    if filter:
        out = [d for d in out if filter in d.rel]
    seen: set[str] = set()
    unique = []
    for d in out:
        real = os.path.realpath(d.path)
        if real not in seen:
            seen.add(real)
            unique.append(d)
    out = unique
    out.sort(key=lambda d: d.path)
    return out


def fixture_refs(path: str) -> list[str]:
    """Literal fixture names the file mentions, in source order (duplicates kept)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [m.group(2) for m in _FIXTURE_REF.finditer(text)]


def newer_than(files: list[Discovered], reference: str) -> list[Discovered]:
    """`--since PATH`: files modified after PATH; if PATH's mtime can't be read, no filtering."""
    try:
        ref = os.stat(reference).st_mtime_ns
    except OSError:
        return files
    keep = []
    for d in files:
        try:
            if os.stat(d.path).st_mtime_ns > ref:
                keep.append(d)
        except OSError:
            pass
    return keep


def snapshot_mtimes(files: list[Discovered]) -> list[tuple[str, int]]:
    """(path, mtime) pairs, for `--watch` change detection."""
    out = []
    for d in files:
        try:
            out.append((d.path, os.stat(d.path).st_mtime_ns))
        except OSError:
            out.append((d.path, -1))
    return sorted(out)

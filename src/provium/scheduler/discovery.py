"""Finding test files: `*.test.lua` under the given paths, sorted, never following symlinks.

A path that is itself a `*.test.lua` file is taken as is.  `--filter` matches the
path relative to the root it was found under (a file given directly has the
relative path "" and so is dropped by any non-empty filter, as in the reference).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

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


def _walk(root: str, suffix: str) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(suffix):
                # normpath: a scan of "." reports `a.test.lua`, not `./a.test.lua`
                found.append(os.path.normpath(os.path.join(dirpath, name)))
    return found


def discover(paths: list[str], *, filter: str | None = None, suffix: str = TEST_SUFFIX) -> list[Discovered]:
    """Every matching file under `paths`, sorted by path."""
    out: list[Discovered] = []
    for root in paths:
        if os.path.isfile(root):
            if not root.endswith(suffix):
                raise DiscoveryError(f"`{root}` is not a `*{suffix}` file or a directory")
            out.append(Discovered(path=root, root=root, rel=""))
            continue
        if not os.path.isdir(root):
            raise DiscoveryError(f"path `{root}` does not exist")
        for f in _walk(root, suffix):
            out.append(Discovered(path=f, root=root, rel=os.path.relpath(f, root)))
    if filter:
        out = [d for d in out if filter in d.rel]
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

"""Temporary files of one `provium` run, and sweeping those of runs that were killed.

A run's scratch directory is removed when the run ends.  A run killed with
SIGKILL cannot do that, so every such name carries the owner's pid
(`provium-run-<pid>-<random>`) and the next run removes the ones whose owner
no longer exists.  Runs going on at the same time are left alone: their owner
is alive.  A pid reused by an unrelated process only delays the sweep (the
entry is kept while that process lives); nothing live is ever removed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

RUN_PREFIX = "provium-run-"
# This run's own temp entries: `<prefix><pid>-...` or `<prefix><pid>.<ext>`.
RUN_PREFIXES = (RUN_PREFIX, "provium-coverage-")


def make_run_dir() -> str:
    """A fresh 0700 scratch directory for this run, named after our pid; stale ones are swept first."""
    tmp = tempfile.gettempdir()
    sweep_stale(tmp)
    return tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-", dir=tmp)


def owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def sweep_stale(tmp: str | os.PathLike, prefixes: tuple[str, ...] = RUN_PREFIXES) -> list[str]:
    """Remove the entries in `tmp` named `<prefix><pid>` (alone, or followed by `-` or
    `.`) whose owner process is gone; what was removed.  Every part of provium that
    keeps pid-named scratch (QEMU roots, disk images, switch sockets) sweeps with this."""
    owned = re.compile("^(" + "|".join(map(re.escape, prefixes)) + r")(\d+)(?:[-.]|$)")
    removed: list[str] = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    me = os.getpid()
    uid = os.getuid()
    for name in names:
        m = owned.match(name)
        if m is None:
            continue
        pid = int(m.group(2))
        if pid == me or owner_alive(pid):
            continue
        path = Path(tmp) / name
        try:
            st = path.lstat()
        except OSError:
            continue
        if st.st_uid != uid:
            continue  # another user's: not ours to judge
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(str(path))
        except OSError:
            pass  # raced with another sweeper, or not ours after all
    return removed

"""`--rerun-failed` state: the files that failed last time, as canonical paths.

Stored as a JSON array at `$PROVIUM_RERUN_STATE`, else
`$HOME/.cache/provium/rerun.json`, else `/tmp/provium-rerun.json`.  After each
run the files that ran and passed are removed from the set and the ones that
failed are added, so once everything passes the state empties (and the file
is removed) rather than pointing at fixed files forever.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from provium import hostfiles
from provium.scheduler.results import FileResult

# A state of a few thousand paths is tens of KiB; anything near this is not ours.
MAX_STATE_BYTES = 16 << 20
WHAT = "rerun state"


def state_path() -> Path:
    env = os.environ.get("PROVIUM_RERUN_STATE")
    if env:
        return Path(env)
    return _default_path()


def _default_path() -> Path:
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".cache" / "provium" / "rerun.json"
    return Path("/tmp/provium-rerun.json")


def canonical(path: str) -> str:
    return os.path.realpath(path)


def load(path: Path | None = None) -> set[str]:
    """The stored set; empty when there is none or it is not valid JSON.

    A path that is not a regular file, or is too big to be a state, is an error
    (`hostfiles.HostFileError`): reading `/dev/zero` must not fill memory.
    """
    path = path or state_path()
    raw = hostfiles.read_file(path, limit=MAX_STATE_BYTES, what=WHAT)
    if raw is None:
        return set()
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return set()
    if not isinstance(data, list):
        return set()
    return {p for p in data if isinstance(p, str)}


def update(results: list[FileResult], path: Path | None = None) -> None:
    path = path or state_path()
    state = load(path)
    for r in results:
        if r.not_run is not None:
            continue  # never ran: leave whatever was known about it
        c = canonical(r.path)
        if r.passed:
            state.discard(c)
        else:
            state.add(c)
    if not state:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if path.is_file() and not path.is_symlink() and st.st_uid == os.geteuid():
            path.unlink()
        else:  # a link, a device, someone else's file: empty it, never remove it
            hostfiles.write_file(path, b"[]", what=WHAT)
        return
    if path == _default_path():
        path.parent.mkdir(parents=True, exist_ok=True)  # our own cache dir
    hostfiles.write_file(path, json.dumps(sorted(state), indent=1).encode(), what=WHAT)

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

from provium.fsutil import atomic_write
from provium.scheduler.results import FileResult


def state_path() -> Path:
    env = os.environ.get("PROVIUM_RERUN_STATE")
    if env:
        return Path(env)
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".cache" / "provium" / "rerun.json"
    return Path("/tmp/provium-rerun.json")


def canonical(path: str) -> str:
    return os.path.realpath(path)


def load(path: Path | None = None) -> set[str]:
    """The stored set; empty when there is none or it cannot be read."""
    path = path or state_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
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
            path.unlink()
        except FileNotFoundError:
            pass
        return
    atomic_write(path, json.dumps(sorted(state), indent=1))

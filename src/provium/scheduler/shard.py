"""CI shards: `--shard K/N` runs one of N disjoint parts of the suite.

Every shard computes the same split from the same inputs (the discovered paths
and the durations file), so N CI machines given K = 1..N together run every
file exactly once, without talking to each other.

The split balances time, not file counts: with durations from an earlier run
(`--durations-file`, which every run writes), files are placed longest first,
each on the shard with the least time so far (greedy longest-processing-time
bin packing; ties go to the lower shard, then by path).  A file without a
recorded duration counts as the mean of the known ones; with no durations at
all every file weighs the same and the split is round-robin in path order.

The durations file is JSON: `{"version": 1, "files": {"<path>": seconds}}`,
keyed by the path as discovered (so run the shards from the same directory
with the same path arguments).  Each run updates the entries of the files it
ran and keeps the others.  A sharded run writes its durations to a part
beside the file (`<file>.<K>-of-<N>`), never to the file itself: otherwise shard
1 finishing first would change the split that shard 2 then computes.  Merge the
parts (their `files` maps) into the file for the next run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from provium import hostfiles
from provium.errors import ConfigError

MAX_BYTES = 16 << 20
WHAT = "durations file"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ConfigError):
    """A bad `--shard` value."""


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/5"` -> (2, 5); K counts from 1."""
    m = _SHARD.match(text or "")
    if not m:
        raise ShardError(f"--shard: expected K/N with whole numbers, like `1/4` (got `{text}`)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard: K must be between 1 and N, and N at least 1 (got `{text}`)")
    return k, n


def default_path() -> Path:
    env = os.environ.get("PROVIUM_DURATIONS")
    if env:
        return Path(env)
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".cache" / "provium" / "durations.json"
    return Path("/tmp/provium-durations.json")


def part_path(path: Path, k: int, n: int) -> Path:
    """Where shard K of N writes its durations (never into the file the split reads)."""
    return path.with_name(f"{path.name}.{k}-of-{n}")


def key(path: str) -> str:
    return os.path.normpath(path)


def load_durations(path: Path) -> dict[str, float]:
    """Seconds per file; empty when the file is missing or not ours."""
    raw = hostfiles.read_file(path, limit=MAX_BYTES, what=WHAT)
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): float(v) for k, v in files.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v}


def save_durations(path: Path, ran: Iterable[tuple[str, float]]) -> None:
    """Merge the durations of the files that ran into the file at `path`."""
    known = load_durations(path)
    for p, secs in ran:
        known[key(p)] = round(secs, 3)
    if path.parent == default_path().parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": 1, "files": dict(sorted(known.items()))}, indent=1)
    hostfiles.write_file(path, body.encode(), what=WHAT)


def split(paths: list[str], n: int, durations: dict[str, float] | None = None) -> list[list[str]]:
    """The N shards (each in input order)."""
    durations = durations or {}
    known = [durations[key(p)] for p in paths if key(p) in durations]
    default = sum(known) / len(known) if known else 1.0
    weight = {p: durations.get(key(p), default) for p in paths}
    loads = [0.0] * n
    owner: dict[str, int] = {}
    for p in sorted(paths, key=lambda p: (-weight[p], p)):
        i = min(range(n), key=lambda j: (loads[j], j))
        owner[p] = i
        loads[i] += weight[p]
    return [[p for p in paths if owner[p] == i] for i in range(n)]


def select(paths: list[str], k: int, n: int, durations: dict[str, float] | None = None) -> set[str]:
    """The paths of shard K (1-based)."""
    return set(split(paths, n, durations)[k - 1])

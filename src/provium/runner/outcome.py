"""What running one test file produced (written as JSON by the runner subprocess)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

TEST_STATUSES = ("passed", "failed", "skipped", "timed_out")


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class
    name: str
    status: str  # passed | failed | skipped | timed_out
    message: str | None = None
    log: list[str] = field(default_factory=list)
    duration_ns: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileOutcome:
    path: str
    chunk_error: str | None = None
    tests: list[TestOutcome] = field(default_factory=list)
    duration_ns: int = 0
    timed_out: bool = False  # the file's own time budget ran out (later tests not run)

    def summary(self) -> tuple[int, int, int]:
        """(passed, failed, skipped); a timed-out test counts as failed."""
        p = sum(1 for t in self.tests if t.status == "passed")
        s = sum(1 for t in self.tests if t.status == "skipped")
        return p, len(self.tests) - p - s, s

    def all_succeeded(self) -> bool:
        return (self.chunk_error is None and not self.timed_out
                and all(t.status in ("passed", "skipped") for t in self.tests))

    def by_name(self, name: str) -> TestOutcome:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(_jsonable(asdict(self)), ensure_ascii=False)


def _jsonable(v: Any) -> Any:
    """Meta values may hold bytes (non-UTF-8 Lua strings); JSON gets lossy text."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return None
    return v

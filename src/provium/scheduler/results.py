"""What one test file produced: the runner's FileOutcome plus what the scheduler saw.

The runner writes a FileOutcome JSON (`{path, chunk_error, tests: [...], duration_ns}`);
the scheduler adds whether the file timed out, crashed, or was never run
(`--fail-fast`).  Reporters (human, JSON lines, JUnit) read only these types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TEST_STATUSES = ("passed", "failed", "skipped", "timed_out")


class ResultError(ValueError):
    """The runner's result file is not a valid FileOutcome."""


@dataclass
class TestResult:
    __test__ = False  # not a pytest class
    name: str
    status: str  # passed | failed | skipped | timed_out
    message: str | None = None
    log: list[str] = field(default_factory=list)
    duration_ns: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "timed_out")


@dataclass
class FileResult:
    path: str
    tests: list[TestResult] = field(default_factory=list)
    chunk_error: str | None = None
    duration_ns: int = 0
    timed_out: bool = False  # the per-file watchdog fired
    crashed: bool = False  # the runner died or wrote no usable result
    not_run: str | None = None  # why it never ran (e.g. "skipped: --fail-fast")
    output: str = ""  # the tail of the runner's stdout/stderr (Lua print, warnings)

    @property
    def counts(self) -> tuple[int, int, int]:
        p = sum(1 for t in self.tests if t.status == "passed")
        f = sum(1 for t in self.tests if t.failed)
        s = sum(1 for t in self.tests if t.status == "skipped")
        return p, f, s

    @property
    def errored(self) -> bool:
        """A chunk error (incl. a crash) or a timeout: the file itself went wrong."""
        return self.chunk_error is not None or self.timed_out

    @property
    def passed(self) -> bool:
        return (not self.timed_out and self.chunk_error is None and self.not_run is None
                and all(not t.failed for t in self.tests))

    @property
    def status(self) -> str:
        """The `file_completed` status."""
        if self.timed_out:
            return "timed_out"
        if self.chunk_error is not None:
            return "crashed"
        return "passed" if self.passed else "failed"


def _str_or_none(v: Any, where: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ResultError(f"{where}: expected a string or null, got {type(v).__name__}")


def parse_outcome(data: Any, path: str) -> FileResult:
    """Validate a runner's FileOutcome JSON object."""
    if not isinstance(data, dict):
        raise ResultError(f"result: expected an object, got {type(data).__name__}")
    tests = data.get("tests", [])
    if not isinstance(tests, list):
        raise ResultError("result: `tests` must be an array")
    out = FileResult(path=path, chunk_error=_str_or_none(data.get("chunk_error"), "result.chunk_error"),
                     duration_ns=int(data.get("duration_ns") or 0))
    for i, t in enumerate(tests):
        where = f"result.tests[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ResultError(f"{where}: needs a string `name`")
        status = t.get("status")
        if status not in TEST_STATUSES:
            raise ResultError(f"{where}: status {status!r} is not one of {', '.join(TEST_STATUSES)}")
        log = t.get("log") or []
        if not isinstance(log, list):
            raise ResultError(f"{where}: `log` must be an array of strings")
        meta = t.get("meta") or {}
        out.tests.append(TestResult(
            name=t["name"], status=status, message=_str_or_none(t.get("message"), f"{where}.message"),
            log=[str(x) for x in log], duration_ns=int(t.get("duration_ns") or 0),
            meta=meta if isinstance(meta, dict) else {},
        ))
    # The runner enforces the file timeout itself and says so with `timed_out`;
    # a test cut short by the *file* timeout also means the file timed out.
    if data.get("timed_out") is True or any(
            t.status == "timed_out" and (t.message or "").startswith("file timeout") for t in out.tests):
        out.timed_out = True
    return out


def load_outcome(result_path: str, path: str) -> FileResult:
    with open(result_path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ResultError(f"result file is not valid JSON: {exc}") from None
    return parse_outcome(data, path)

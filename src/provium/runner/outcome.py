"""What running one test file produced: written as JSON by the runner subprocess,
read back (and validated) by the dispatcher, which builds on these types."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from ..errors import ProtocolError

TEST_STATUSES = ("passed", "failed", "skipped", "timed_out")

_F = TypeVar("_F", bound="FileOutcome")


class ResultError(ProtocolError, ValueError):
    """A runner's result (its FileOutcome JSON) is not valid."""


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class
    name: str
    status: str  # passed | failed | skipped | timed_out
    message: str | None = None
    log: list[str] = field(default_factory=list)
    duration_ns: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A timed-out test counts as failed."""
        return self.status in ("failed", "timed_out")


@dataclass
class FileOutcome:
    path: str
    chunk_error: str | None = None
    tests: list[TestOutcome] = field(default_factory=list)
    duration_ns: int = 0
    # The file's time budget ran out (later tests not run): said by the runner's own
    # timer, or set by the dispatcher's watchdog when it had to kill the runner.
    timed_out: bool = False

    def summary(self) -> tuple[int, int, int]:
        """(passed, failed, skipped); a timed-out test counts as failed."""
        p = sum(1 for t in self.tests if t.status == "passed")
        f = sum(1 for t in self.tests if t.failed)
        s = sum(1 for t in self.tests if t.status == "skipped")
        return p, f, s

    def all_succeeded(self) -> bool:
        return (self.chunk_error is None and not self.timed_out
                and all(not t.failed for t in self.tests))

    def by_name(self, name: str) -> TestOutcome:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(_jsonable(asdict(self)), ensure_ascii=False)

    @classmethod
    def parse(cls: type[_F], data: Any, path: str) -> _F:
        """Validate a FileOutcome JSON object (as `to_json` writes it) for the file `path`.

        Built as `cls`, so a subclass (the scheduler's FileResult) gets its own type.
        """
        if not isinstance(data, dict):
            raise ResultError(f"result: expected an object, got {type(data).__name__}")
        tests = data.get("tests", [])
        if not isinstance(tests, list):
            raise ResultError("result: `tests` must be an array")
        out = cls(path=path, chunk_error=_str_or_none(data.get("chunk_error"), "result.chunk_error"),
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
            out.tests.append(TestOutcome(
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

    @classmethod
    def load(cls: type[_F], result_path: str, path: str) -> _F:
        """`parse` the JSON file a runner wrote at `result_path`."""
        with open(result_path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ResultError(f"result file is not valid JSON: {exc}") from exc
        return cls.parse(data, path)


def _str_or_none(v: Any, where: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ResultError(f"{where}: expected a string or null, got {type(v).__name__}")


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

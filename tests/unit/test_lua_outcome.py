"""FileOutcome JSON and the duration wording used in timeout messages."""

import json

from provium.runner.file_runner import format_duration
from provium.runner.outcome import FileOutcome, TestOutcome


def test_format_duration():
    assert [format_duration(s) for s in (30, 0.5, 1.5, 0.15, 120, 0.0005)] == \
        ["30s", "500ms", "1.5s", "150ms", "120s", "0.5ms"]


def test_outcome_json_and_summary():
    out = FileOutcome("a.test.lua", tests=[
        TestOutcome("p", "passed", duration_ns=5, meta={"raw": b"\xff", "n": float("nan")}),
        TestOutcome("f", "failed", "x.lua:1: no", ["line"]),
        TestOutcome("t", "timed_out", "test timeout exceeded (1s)"),
        TestOutcome("s", "skipped", "why"),
    ], duration_ns=10)
    assert out.summary() == (1, 2, 1)
    assert not out.all_succeeded()
    data = json.loads(out.to_json())
    assert data["path"] == "a.test.lua" and data["chunk_error"] is None and data["timed_out"] is False
    assert data["tests"][0]["meta"] == {"raw": "\ufffd", "n": None}
    assert data["tests"][1] == {"name": "f", "status": "failed", "message": "x.lua:1: no", "log": ["line"],
                                "duration_ns": 0, "meta": {}}
    assert out.by_name("s").message == "why"
    assert FileOutcome("b", tests=[TestOutcome("s", "skipped")]).all_succeeded()


def test_outcome_json_round_trip():
    """What the runner writes is what the dispatcher reads back (one format, one parser)."""
    from provium.scheduler.results import FileResult

    out = FileOutcome("a.test.lua", chunk_error="a.test.lua:9: late error", tests=[
        TestOutcome("p", "passed", duration_ns=5, meta={"spec": "S1"}),
        TestOutcome("f", "failed", "x.lua:1: no", ["line", "two"], 7),
        TestOutcome("s", "skipped", "why"),
    ], duration_ns=10, timed_out=True)
    back = FileResult.parse(json.loads(out.to_json()), "a.test.lua")
    assert type(back) is FileResult and back.tests == out.tests
    assert (back.path, back.chunk_error, back.duration_ns, back.timed_out) == \
        ("a.test.lua", "a.test.lua:9: late error", 10, True)
    assert (back.crashed, back.not_run, back.output) == (False, None, "")
    assert FileOutcome.parse(json.loads(out.to_json()), "a.test.lua") == out

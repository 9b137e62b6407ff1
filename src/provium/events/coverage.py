"""Spec coverage from an event stream: which `meta.spec` ids (or any meta key) ran, and how.

Only terminal test events count (`test_passed`, `test_failed`, `test_skipped`).
A string value is one bucket; an array of strings counts toward each of its
strings (one test can cover several spec rows); anything else lands in
`<unset>`.  Skipped tests are counted apart from passed ones so a spec item
covered only by a skipped test shows up as such, not as covered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable

from .types import EventFrame, TestFailed, TestPassed, TestSkipped, iter_events

UNSET = "<unset>"


@dataclass
class Bucket:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    tests: list[str] = field(default_factory=list)  # "path: name" of each contributing test

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    @property
    def state(self) -> str:
        """failing if any test failed; covered if some passed; else skipped-only."""
        if self.failed:
            return "failing"
        if self.passed:
            return "covered"
        return "skipped"


@dataclass
class CoverageReport:
    key: str
    buckets: dict[str, Bucket] = field(default_factory=dict)
    unset: Bucket = field(default_factory=Bucket)

    def add(self, frame: EventFrame) -> None:
        p = frame.payload
        if isinstance(p, TestPassed):
            outcome = "passed"
        elif isinstance(p, TestFailed):
            outcome = "failed"
        elif isinstance(p, TestSkipped):
            outcome = "skipped"
        else:
            return
        names = bucket_names(p.meta.get(self.key))
        targets = [self.buckets.setdefault(n, Bucket()) for n in names] or [self.unset]
        for b in targets:
            setattr(b, outcome, getattr(b, outcome) + 1)
            b.tests.append(f"{p.path}: {p.name}")

    def totals(self) -> tuple[int, int, int]:
        bs = [*self.buckets.values(), self.unset]
        return sum(b.passed for b in bs), sum(b.failed for b in bs), sum(b.skipped for b in bs)

    def render(self) -> str:
        lines = [f"coverage by meta `{self.key}`:"]
        width = max([len(k) for k in self.buckets] + [len(UNSET)])
        rows = sorted(self.buckets.items())
        if self.unset.total:
            rows.append((UNSET, self.unset))
        for name, b in rows:
            lines.append(f"  {name:<{width}}  {b.state:<8}  {b.total} test(s): "
                         f"{b.passed} passed, {b.failed} failed, {b.skipped} skipped")
        if not rows:
            lines.append("  (no test results in the stream)")
        p, f, s = self.totals()
        covered = sum(1 for b in self.buckets.values() if b.state == "covered")
        failing = sum(1 for b in self.buckets.values() if b.state == "failing")
        only_skipped = sum(1 for b in self.buckets.values() if b.state == "skipped")
        lines.append(f"{len(self.buckets)} `{self.key}` value(s): {covered} covered, {failing} failing, "
                     f"{only_skipped} only skipped; {p} passed, {f} failed, {s} skipped")
        return "\n".join(lines)

    def to_json(self) -> dict:
        def one(b: Bucket) -> dict:
            return {"state": b.state, "passed": b.passed, "failed": b.failed, "skipped": b.skipped,
                    "tests": list(b.tests)}

        return {"by": self.key, "buckets": {k: one(b) for k, b in sorted(self.buckets.items())},
                "unset": one(self.unset)}

    def render_json(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)


def bucket_names(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def aggregate(frames: Iterable[EventFrame], key: str = "spec") -> CoverageReport:
    report = CoverageReport(key=key)
    for frame in frames:
        report.add(frame)
    return report


def aggregate_stream(stream: BinaryIO, key: str = "spec") -> CoverageReport:
    return aggregate(iter_events(stream), key)

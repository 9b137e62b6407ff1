"""Helpers shared by the Lua-level tests: run a Lua source through the real
file runner on the local backend and look at the outcome and the events."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provium.runner.file_runner import run_file
from provium.runner.outcome import FileOutcome
from provium.runner.settings import RunSettings


@dataclass
class Run:
    outcome: FileOutcome
    events: list[Any] = field(default_factory=list)
    path: str = ""

    def test(self, name: str):
        return self.outcome.by_name(name)

    def status(self, name: str) -> str:
        return self.test(name).status

    def message(self, name: str) -> str:
        return self.test(name).message or ""

    def kinds(self, *kinds: str) -> list[Any]:
        return [e for e in self.events if e.KIND in kinds]

    def assert_all_passed(self) -> None:
        assert self.outcome.chunk_error is None, self.outcome.chunk_error
        bad = [(t.name, t.status, t.message) for t in self.outcome.tests if t.status != "passed"]
        assert not bad, bad


def run_lua(tmp_path: Path, source: str, *, name: str = "x.test.lua", settings: RunSettings | None = None,
            files: dict[str, str] | None = None, **kw: Any) -> Run:
    """Write `source` to tmp_path/name (plus any extra `files`) and run it."""
    for rel, text in (files or {}).items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    s = settings or RunSettings(vmm="local", **kw)
    events: list[Any] = []
    out = run_file(str(path), s, events.append)
    return Run(out, events, str(path))


def no_traceback(text: str | None) -> bool:
    return text is None or ("Traceback" not in text and 'File "' not in text and ".py\", line" not in text)


def test_support_runs_a_trivial_file(tmp_path):
    r = run_lua(tmp_path, 'test("t", function(t) t:assert(true) end)')
    r.assert_all_passed()
    assert [e.KIND for e in r.events] == ["test_started", "test_passed"]


def line_of(source: str, needle: str) -> int:
    """1-based line of the first line of `source` containing `needle` (after dedent)."""
    text = textwrap.dedent(source)
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_os_tmpname_creates_the_file_like_lua_on_linux(tmp_path):
    r = run_lua(tmp_path, '''
        test("tmpname", function(t)
          local a, b = os.tmpname(), os.tmpname()
          t:assert(a ~= b)
          t:assert(a:match("^/tmp/lua_"), a)
          local f = io.open(a, "r")
          t:assert(f ~= nil, "os.tmpname() made no file")
          t:assert_eq(f:read("a"), "")
          f:close()
          os.remove(a); os.remove(b)
        end)
    ''')
    r.assert_all_passed()

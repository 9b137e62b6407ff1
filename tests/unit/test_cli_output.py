"""Reporters (text, JSON lines, JUnit XML), rerun state, coverage, and usage errors."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from rich.console import Console

from provium.cli import rerun
from provium.cli.coverage import coverage_command
from provium.cli.main import cli
from provium.events import types as ev
from provium.events.coverage import aggregate
from provium.events.reporters import Line, PlainConsole, TextReporter, console_for, json_object, junit_tree, write_junit
from provium.scheduler.results import FileResult, ResultError, TestOutcome


def sample_results():
    ok = FileResult(path="a.test.lua", tests=[TestOutcome("one", "passed", duration_ns=1_500_000),
                                              TestOutcome("two", "skipped", "filtered: slow tests skipped")],
                    duration_ns=2_000_000)
    bad = FileResult(path="b.test.lua", tests=[TestOutcome("good", "passed"),
                                               TestOutcome("broken", "failed", "expected 1\ngot 2", log=["step 1"])])
    chunk = FileResult(path="c.test.lua", chunk_error="c.test.lua:3: syntax error near 'end'")
    slow = FileResult(path="d.test.lua", tests=[TestOutcome("stuck", "timed_out", "file timeout (1s) exceeded")],
                      timed_out=True)
    skipped = FileResult(path="e.test.lua", not_run="skipped: --fail-fast")
    return [ok, bad, chunk, slow, skipped]


def render(fn, **kw) -> str:
    buf = io.StringIO()
    rep = TextReporter(Console(file=buf, highlight=False, soft_wrap=True, no_color=True, width=200), **kw)
    fn(rep)
    return buf.getvalue()


def test_text_output_lines():
    results = sample_results()
    out = render(lambda r: (r.print_batch(results), r.print_summary(results, 12.345)))
    lines = out.splitlines()
    assert "PASS a.test.lua (1 passed, 0 failed, 1 skipped)" in lines
    assert "FAIL b.test.lua (1 passed, 1 failed, 0 skipped)" in lines
    i = lines.index("    FAIL broken")
    assert lines[i + 1:i + 4] == ["        expected 1", "        got 2", "        log: step 1"]
    assert "FAIL c.test.lua" in lines and "  chunk_error: c.test.lua:3: syntax error near 'end'" in lines
    assert "TIME d.test.lua (0 passed, 1 failed, 0 skipped)" in lines
    assert "    TIME stuck" in lines
    assert not any("e.test.lua" in l for l in lines)  # not-run files only in the summary
    assert lines[-2] == ""
    assert lines[-1] == ("4 file(s); 2 passed, 2 failed, 1 skipped, 2 file(s) errored, "
                         "1 file(s) not run (--fail-fast); 12.35s")
    assert "PASS one" not in out


def test_text_verbose_quiet_and_fail_fast():
    results = sample_results()
    out = render(lambda r: r.print_batch(results), verbose=True)
    assert "    PASS one" in out and "    SKIP two (filtered: slow tests skipped)" in out
    out = render(lambda r: r.print_batch(results), quiet=True)
    assert "a.test.lua" not in out and "FAIL b.test.lua" in out
    # --fail-fast: every file that ran is shown, even after the first failing one (files run side
    # by side; the summary counts c's chunk error, so its line must be there); e (never started) is not
    out = render(lambda r: (r.print_batch(results), r.print_summary(results, 1.0)))
    assert "FAIL b.test.lua" in out and "  chunk_error: c.test.lua:3: syntax error near 'end'" in out
    assert "e.test.lua" not in out and "2 file(s) errored, 1 file(s) not run (--fail-fast)" in out


# Lines rich changes when it writes them (control characters, tabs, trailing blanks,
# wide and combining characters, markup-like text): the plain console hands these to
# rich, the rest it writes itself; either way the bytes must be rich's.
AWKWARD = ["plain", "", "   ", "trailing  ", "tab\there", "\tlead", "bell\x07 bs\x08 cr\r ff\x0c vt\x0b",
           "esc \x1b[31m red", "nul \x00", "wide 中文 and 😀", "e\u0301 combining", "[bold]not markup[/bold]",
           ":smile: no emoji", "x" * 300, "x" * 100 + "   ", "ünïcödé …", "\u200b zero width", "a\xa0b"]


def _awkward_results() -> list[FileResult]:
    msg = "\n".join(AWKWARD)
    return [
        FileResult(path="odd\tname.test.lua", tests=[TestOutcome(s or "t", "failed", s, log=[s]) for s in AWKWARD],
                   output=msg),
        FileResult(path="chunk.test.lua", chunk_error=msg, output=msg),
        FileResult(path="ok.test.lua", tests=[TestOutcome(s or "t", "skipped", s) for s in AWKWARD]),
    ]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_plain_console_writes_what_rich_writes(monkeypatch, verbose):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    results = sample_results() + _awkward_results()

    def report(console) -> str:
        rep = TextReporter(console, verbose=verbose)
        rep.print_batch(results)
        for r in results:
            for line in rep.file_lines(r, prefix="[1/9] "):
                console.print(line)
        rep.print_summary(results, 1.25)
        return console.file.getvalue()

    plain = PlainConsole(io.StringIO())
    assert report(plain) == report(Console(file=io.StringIO(), highlight=False, soft_wrap=True))
    assert plain._rich is not None  # the awkward lines went to rich


def test_the_plain_console_needs_no_rich_for_plain_lines(monkeypatch):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    plain = PlainConsole(io.StringIO())
    TextReporter(plain).print_batch(sample_results())
    TextReporter(plain).print_summary(sample_results(), 2.0)
    assert plain._rich is None
    assert plain.file.getvalue().endswith("\n4 file(s); 2 passed, 2 failed, 1 skipped, 2 file(s) errored, "
                                          "1 file(s) not run (--fail-fast); 2.00s\n")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_console_is_rich_for_a_terminal_or_forced_colour(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert isinstance(console_for(io.StringIO()), PlainConsole)
    assert isinstance(console_for(_Tty()), Console)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(console_for(io.StringIO()), Console)


def test_a_line_renders_in_rich_as_the_text_it_replaced():
    line = Line("[1/2] ").append("FAIL", style="bold red").append(" x.test.lua")
    text = line.__rich__()
    assert text.plain == "[1/2] FAIL x.test.lua" and str(line) == text.plain
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [(6, 10, "bold red")]
    assert str(Line("dim", style="dim").__rich__().style) == "dim"


def test_json_object_shape():
    results = sample_results()
    objs = [json.loads(json.dumps(json_object(r))) for r in results]
    assert objs[0] == {"path": "a.test.lua", "timeout": "in_time", "passed": True, "chunk_error": None,
                       "duration_ns": 2_000_000,
                       "tests": [{"name": "one", "status": "passed", "message": None, "log": [], "duration_ns": 1_500_000,
                                  "meta": {}},
                                 {"name": "two", "status": "skipped", "message": "filtered: slow tests skipped",
                                  "log": [], "duration_ns": 0, "meta": {}}]}
    assert objs[1]["passed"] is False and objs[1]["tests"][1]["log"] == ["step 1"]
    assert objs[2]["chunk_error"].startswith("c.test.lua:3") and objs[2]["tests"] == []
    assert objs[3]["timeout"] == "timed_out" and objs[3]["tests"][0]["status"] == "failed"
    assert objs[4]["chunk_error"] == "skipped: --fail-fast" and objs[4]["passed"] is False


def test_junit_structure(tmp_path):
    results = sample_results()
    results[1].tests[1].message = "bad \x01 char & <tag>"
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "junit.xml"
    write_junit(str(path), results, elapsed=3.5)
    root = ET.parse(path).getroot()  # a real XML parser must accept it
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == \
        {"tests": "8", "failures": "2", "errors": "3", "skipped": "1"}
    assert float(root.get("time")) == 3.5
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [r.path for r in results]
    for s in suites:
        for attr in ("name", "tests", "failures", "errors", "skipped", "time", "timestamp"):
            assert s.get(attr) is not None, attr
        assert int(s.get("tests")) == len(s.findall("testcase"))
        for case in s.findall("testcase"):
            assert case.get("name") and case.get("classname") is not None and float(case.get("time")) >= 0
    a, b, c, d, e = suites
    assert a.find("testcase[@name='two']/skipped").get("message") == "filtered: slow tests skipped"
    fail = b.find("testcase[@name='broken']/failure")
    assert fail.get("message") == "bad \ufffd char & <tag>" and fail.get("type") == "failure"
    assert b.find("testcase[@name='broken']/system-out").text == "step 1"
    assert c.find("testcase/error").get("type") == "chunk_error"
    assert d.find("testcase[@name='stuck']/failure").get("type") == "timeout"
    assert d.find("testcase/error").get("type") == "timeout"
    assert e.find("testcase/error").get("message") == "skipped: --fail-fast"
    assert a.get("tests") == "2" and a.get("failures") == "0" and a.get("skipped") == "1"


def test_parse_outcome_validates():
    r = FileResult.parse({"path": "x", "chunk_error": None, "tests": [
        {"name": "a", "status": "passed", "message": None, "log": ["l"], "duration_ns": 5, "meta": {}}],
        "duration_ns": 9}, "x")
    assert r.tests[0].log == ["l"] and r.passed
    with pytest.raises(ResultError, match="status 'weird'"):
        FileResult.parse({"tests": [{"name": "a", "status": "weird"}]}, "x")
    with pytest.raises(ResultError, match="name"):
        FileResult.parse({"tests": [{"status": "passed"}]}, "x")


def test_rerun_state_update(tmp_path, monkeypatch):
    state = tmp_path / "state" / "rerun.json"
    state.parent.mkdir()
    monkeypatch.setenv("PROVIUM_RERUN_STATE", str(state))
    a, b = tmp_path / "a.test.lua", tmp_path / "b.test.lua"
    a.write_text(""), b.write_text("")
    fail_a = FileResult(path=str(a), tests=[TestOutcome("t", "failed")])
    pass_b = FileResult(path=str(b), tests=[TestOutcome("t", "passed")])
    rerun.update([fail_a, pass_b])
    assert json.loads(state.read_text()) == [str(a.resolve())]
    rerun.update([FileResult(path=str(b), tests=[TestOutcome("t", "failed")])])
    assert rerun.load() == {str(a.resolve()), str(b.resolve())}
    rerun.update([FileResult(path=str(a), tests=[TestOutcome("t", "passed")]),
                  FileResult(path=str(b), not_run="skipped: --fail-fast")])
    assert rerun.load() == {str(b.resolve())}
    rerun.update([pass_b])
    assert not state.exists()


def frames_for_coverage():
    return [
        ev.EventFrame.of(ev.TestPassed(path="f", name="a", meta={"spec": "S1"})),
        ev.EventFrame.of(ev.TestPassed(path="f", name="b", meta={"spec": ["S1", "S2", 7]})),
        ev.EventFrame.of(ev.TestFailed(path="f", name="c", reason="x", meta={"spec": "S2"})),
        ev.EventFrame.of(ev.TestSkipped(path="f", name="d", meta={"spec": "S3"})),
        ev.EventFrame.of(ev.TestPassed(path="f", name="e", meta={"spec": b"S1"})),  # bytes are not a spec id
        ev.EventFrame.of(ev.TestStarted(path="f", name="a", meta={"spec": "S9"})),  # not terminal: ignored
        ev.EventFrame.of(ev.FileCompleted(path="f", status="failed")),
    ]


def test_coverage_aggregation():
    rep = aggregate(frames_for_coverage())
    assert set(rep.buckets) == {"S1", "S2", "S3"}
    assert (rep.buckets["S1"].passed, rep.buckets["S1"].state) == (2, "covered")
    assert (rep.buckets["S2"].passed, rep.buckets["S2"].failed, rep.buckets["S2"].state) == (1, 1, "failing")
    assert rep.buckets["S3"].state == "skipped"
    assert rep.unset.passed == 1
    text = rep.render()
    assert "S2" in text and "failing" in text and "<unset>" in text
    assert text.splitlines()[-1].startswith("3 `spec` value(s): 1 covered, 1 failing, 1 only skipped")


def test_provium_coverage_command(tmp_path):
    p = tmp_path / "ev.msgpack"
    p.write_bytes(b"".join(f.encode() for f in frames_for_coverage()))
    r = CliRunner().invoke(coverage_command, ["--from", str(p), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["by"] == "spec" and data["buckets"]["S2"]["failed"] == 1
    assert data["buckets"]["S1"]["tests"] == ["f: a", "f: b"]
    r = CliRunner().invoke(coverage_command, [], input=p.read_bytes())  # stdin
    assert r.exit_code == 0 and "S3" in r.output
    p.write_bytes(p.read_bytes()[:-3])
    r = CliRunner().invoke(coverage_command, ["--from", str(p)])
    assert r.exit_code != 0 and "mid-frame" in r.output


def invoke(args):
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("args,needle", [
    (["--timeout", "5fortnights"], "--timeout"),
    (["--timeout", "-3"], "--timeout"),
    (["--mem", "lots"], "--mem"),
    (["--mem", "99999999999999999999T"], "overflow"),
    (["--cpus", "0"], "--cpus"),
    (["--tag-meta", "=x"], "KEY must be non-empty"),
    (["--no-tag-meta", "novalue"], "expected KEY=VALUE"),
    (["--vmm", "xen"], "--vmm"),
    (["--json", "--events-stdout"], "cannot be used together"),
    (["-v", "-q"], "cannot be used together"),
    (["--config", "/nonexistent/provium.toml"], "read `/nonexistent/provium.toml`"),
    (["--bogus-flag"], "No such option"),
    (["repl"], "provium repl: profile is required (or pass --fixture)"),
    (["repl", "nosuch"], "nosuch"),
    (["console", "nosuch", "--print-command"], "nosuch"),
    (["lsp-setup", "/nonexistent/dir"], "`/nonexistent/dir` is not a directory"),
    (["fixture", "build"], "Missing argument"),
])
def test_usage_errors_exit_2_with_one_clear_message(args, needle):
    r = invoke(args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output
    assert r.output.startswith("provium: ")
    assert len(r.output.strip().splitlines()) == 1, r.output  # one line, as running.md says


def test_timeout_error_names_units():
    r = invoke(["--timeout", "5fortnights"])
    assert "5fortnights" in r.output and "30s" in r.output and "ms" in r.output


def test_malformed_and_invalid_config(tmp_path):
    bad = tmp_path / "provium.toml"
    bad.write_text("[profiles.x\nkernel = 1")
    r = invoke(["--config", str(bad), str(tmp_path)])
    assert r.exit_code == 2 and f"parse `{bad}`" in r.output and "Traceback" not in r.output
    bad.write_text('[profiles.x]\nkernel = "k"\nmachine = "pc"\n')
    r = invoke(["--config", str(bad), str(tmp_path)])
    assert r.exit_code == 2 and "machine 'pc' is not supported" in r.output


def test_a_profile_without_cmdline_gets_the_builtin_default(tmp_path):
    from provium.config import DEFAULT_CMDLINE, builtin_linux_profile, load

    cfg = tmp_path / "provium.toml"
    cfg.write_text('[profiles.x]\nkernel = "k"\n[profiles.y]\nkernel = "k"\ncmdline = "  "\n'
                   '[profiles.z]\nkernel = "k"\ncmdline = "quiet"\n')
    c = load(str(cfg))
    assert c.profile("x").full_cmdline() == DEFAULT_CMDLINE == builtin_linux_profile().full_cmdline()
    assert "console=ttyS0" in DEFAULT_CMDLINE
    assert c.profile("y").full_cmdline() == DEFAULT_CMDLINE
    assert c.profile("z").full_cmdline() == "quiet"


def test_prepare_unknown_profile(tmp_path):
    cfg = tmp_path / "provium.toml"
    cfg.write_text("")
    r = invoke(["--config", str(cfg), "prepare", "nosuch"])
    assert r.exit_code == 2 and "profile `nosuch` not found" in r.output and "have: debian, linux" in r.output


def test_version_and_help():
    r = invoke(["--version"])
    assert r.exit_code == 0 and r.output.startswith("provium ")
    r = invoke(["--help"])
    assert r.exit_code == 0
    for flag in ("--filter", "--fail-fast", "--json", "--junit", "--save-events", "--vmm", "--timeout", "prepare"):
        assert flag in r.output


def test_no_files_found(tmp_path):
    r = invoke(["--vmm", "local", str(tmp_path)])
    assert r.exit_code == 0 and "no *.test.lua files found" in r.output
    r = invoke(["--vmm", "local", "--json", str(tmp_path)])
    assert r.exit_code == 0 and json.loads(r.output) == {"type": "no_files", "message": "no *.test.lua files found"}


def test_missing_path_is_a_usage_error(tmp_path):
    r = invoke(["--vmm", "local", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_rerun_failed_without_state(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVIUM_RERUN_STATE", str(tmp_path / "none.json"))
    (tmp_path / "a.test.lua").write_text("")
    r = invoke(["--vmm", "local", "--rerun-failed", str(tmp_path)])
    assert r.exit_code == 0 and "nothing to re-run" in r.output


def test_list_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.test.lua").write_text("")
    (tmp_path / "b.fixture.lua").write_text("")
    r = invoke(["--vmm", "local", "list", str(tmp_path)])
    assert r.exit_code == 0 and f"  {tmp_path}/sub/a.test.lua" in r.output
    r = invoke(["list", "--fixtures", str(tmp_path)])
    assert r.exit_code == 0 and "b.fixture.lua" in r.output and "1 fixture(s) found" in r.output


def test_nothing_is_probed_or_built_before_arguments_are_checked(tmp_path, monkeypatch):
    """A typo in a path must not wait for a KVM probe; `list` boots nothing, so probes nothing."""
    from provium import preflight

    def probed(*a, **k):
        raise AssertionError("pre-flight (KVM probe) ran")

    monkeypatch.setattr(preflight, "run", probed)
    monkeypatch.chdir(tmp_path)
    r = invoke([str(tmp_path / "nonexist.test.lua")])
    assert r.exit_code == 2 and "does not exist" in r.output, r.output
    (tmp_path / "a.test.lua").write_text('test("x", function(t) end)')
    r = invoke(["list", str(tmp_path)])
    assert r.exit_code == 0 and "a.test.lua" in r.output, r.output
    r = invoke(["--filter", "nomatch", str(tmp_path)])  # nothing selected: nothing to boot
    assert r.exit_code == 0 and "--filter `nomatch` matched no test file" in r.output, r.output


def test_local_runs_do_not_build_profiles(tmp_path, monkeypatch):
    (tmp_path / "provium.toml").write_text('[profiles.k]\nkernel = "bz"\ncmdline = "x"\nbuild = "exit 3"\n')
    (tmp_path / "a.test.lua").write_text('test("x", function(t) end)')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROVIUM_RERUN_STATE", str(tmp_path / "rerun.json"))
    r = invoke(["--vmm", "local", "--no-progress", "a.test.lua"])
    assert r.exit_code == 0, r.output


def test_json_tests_carry_meta_and_junit_classname_is_the_path():
    r = FileResult(path="net/dns.test.lua", tests=[
        TestOutcome("t", "passed", meta={"spec": "NET-1", "tags": ["a"], "raw": b"\xff", "x": float("inf")})])
    obj = json_object(r)
    assert obj["tests"][0]["meta"] == {"spec": "NET-1", "tags": ["a"], "raw": "\ufffd", "x": None}
    json.dumps(obj, allow_nan=False)
    case = junit_tree([r], elapsed=1.0).getroot().find("testsuite/testcase")
    assert case.get("classname") == "net.dns.test.lua"  # running.md: the path with `/` as `.`


def test_skip_without_reason_prints_no_empty_parentheses():
    r = FileResult(path="a.test.lua", tests=[TestOutcome("quiet skip", "skipped", None),
                                             TestOutcome("loud skip", "skipped", "why")])
    out = render(lambda rep: rep.print_batch([r]), verbose=True).splitlines()
    assert "    SKIP quiet skip" in out and "    SKIP loud skip (why)" in out


def test_a_failing_files_printed_output_is_shown_without_v():
    bad = FileResult(path="b.test.lua", tests=[TestOutcome("broken", "failed", "boom")], output="debug: x=3\n")
    good = FileResult(path="a.test.lua", tests=[TestOutcome("fine", "passed")], output="chatter\n")
    out = render(lambda rep: rep.print_batch([good, bad]))
    assert "debug: x=3" in out and "chatter" not in out

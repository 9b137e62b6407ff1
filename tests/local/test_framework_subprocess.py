"""The runner as the dispatcher starts it: `python -m provium.runner`, and
`list_tests` for `provium list`."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from provium.events.types import iter_events
from provium.runner.file_runner import list_tests
from provium.runner.settings import RunSettings


def start_runner(tmp_path, source, settings=None):
    test = tmp_path / "x.test.lua"
    test.write_text(textwrap.dedent(source))
    sp = tmp_path / "settings.json"
    sp.write_text((settings or RunSettings(vmm="local")).to_json())
    rfd, wfd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "provium.runner", "--settings", str(sp),
                             "--result", str(tmp_path / "result.json"), "--events-fd", str(wfd), str(test)],
                            pass_fds=(wfd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(wfd)
    return proc, rfd


def read_all(fd):
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return data


def test_runner_subprocess_writes_result_and_events(tmp_path):
    proc, rfd = start_runner(tmp_path, '''
        local vm = provium:vm("a", "linux"):boot()
        test("ok", function(t) t:assert_eq(vm:run("echo hi").stdout, "hi\\n") end)
        test("bad", {area = "x"}, function(t) t:log("note"); t:fail("nope") end)
    ''')
    events = list(iter_events(io.BytesIO(read_all(rfd))))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # failing tests are not a runner failure
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["chunk_error"] is None and result["duration_ns"] > 0
    assert [(t["name"], t["status"]) for t in result["tests"]] == [("ok", "passed"), ("bad", "failed")]
    bad = result["tests"][1]
    assert bad["message"].endswith("nope") and bad["log"] == ["note"] and bad["meta"] == {"area": "x"}
    assert [e.kind for e in events] == ["vm_spawned", "test_started", "test_passed", "test_started",
                                        "test_failed", "vm_shutdown"]


def test_runner_subprocess_reports_bad_settings(tmp_path):
    sp = tmp_path / "s.json"
    sp.write_text('{"vmm": "local", "nope": 1}')
    (tmp_path / "x.test.lua").write_text("")
    p = subprocess.run([sys.executable, "-m", "provium.runner", "--settings", str(sp), "--result",
                        str(tmp_path / "r.json"), str(tmp_path / "x.test.lua")], capture_output=True, text=True)
    assert p.returncode == 2
    assert "unknown key(s) nope" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_runner_whose_work_dir_was_swept_does_not_recreate_it(tmp_path):
    # A runner outliving a SIGKILLed dispatcher (killed before its death signal was
    # armed) finished after the next run had swept the work dir, and wrote its
    # result there, creating the directory again: it was left behind for good.
    test = tmp_path / "x.test.lua"
    test.write_text('test("ok", function(t) end)\n')
    sp = tmp_path / "settings.json"
    sp.write_text(RunSettings(vmm="local").to_json())
    gone = tmp_path / "provium-run-1-swept"
    p = subprocess.run([sys.executable, "-m", "provium.runner", "--settings", str(sp), "--result",
                        str(gone / "0.result.json"), str(test)], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not gone.exists()


def test_killed_runner_leaves_no_agent_behind(tmp_path):
    proc, rfd = start_runner(tmp_path, '''
        local vm = provium:vm("a", "linux"):boot()
        test("hang", function(t) vm:run("sleep 60") end)
    ''')
    runner = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30
    kids = []
    while time.monotonic() < deadline and not kids:
        kids = [c for c in runner.children(recursive=True) if "provium.agent" in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert kids, "the local agent never started"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    os.close(rfd)
    gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, [p.pid for p in alive]


def test_list_tests(tmp_path):
    f = tmp_path / "a.test.lua"
    f.write_text('test("one", {tags = {"x"}}, function() end)\ntest("two", function() end)\n')
    got = list_tests(str(f), RunSettings(vmm="local"))
    assert [(t.name, t.meta) for t in got] == [("one", {"tags": ["x"]}), ("two", {})]
    # a top level that boots: nothing is booted (the boot is held, then dropped), and the
    # tests come from running it, meta included
    g = tmp_path / "b.test.lua"
    g.write_text('local vm = provium:vm("a", "linux"):boot()\n'
                 'test("first", function() end)\ntest(\'second\', {slow = true}, function() end)\n')
    assert [(t.name, t.meta) for t in list_tests(str(g))] == [("first", {}), ("second", {"slow": True})]
    # one that uses its VM at the top level: names from the source text (meta unknown)
    g.write_text('local vm = provium:vm("a", "linux"):boot()\nlocal out = vm:run("true")\n'
                 'test("first", function() end)\ntest(\'second\', {slow = true}, function() end)\n')
    assert [(t.name, t.meta) for t in list_tests(str(g))] == [("first", {}), ("second", {})]
    h = tmp_path / "c.test.lua"
    h.write_text("test(")
    with pytest.raises(Exception, match="c.test.lua:1:"):
        list_tests(str(h))


def test_a_runner_given_sigterm_says_so_and_lists_later_tests(tmp_path):
    proc, rfd = start_runner(tmp_path, '''
        test("busy", function(t) while true do end end)
        test("later", function(t) end)
    ''')
    # Once "busy" has started (a fixed sleep was too short under load: the runner was
    # still importing, and SIGTERM killed it before it could report), and a moment more:
    # well inside the busy loop, where Python signal handlers cannot run.
    seen = b""
    deadline = time.monotonic() + 60
    while b"test_started" not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, "the runner never started its first test"
        seen += os.read(rfd, 65536)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    read_all(rfd)
    result = json.loads((tmp_path / "result.json").read_text())
    tests = {t["name"]: t for t in result["tests"]}
    assert tests["busy"]["message"].startswith("runner terminated (SIGTERM)"), result
    assert tests["later"]["status"] == "skipped"
    assert tests["later"]["message"] == "not run: runner terminated (SIGTERM)"
    assert result["chunk_error"] == "runner terminated (SIGTERM)"


def test_a_runner_whose_dispatcher_is_already_gone_runs_nothing(tmp_path):
    # The dispatcher (the events pipe's only reader) died before the runner armed its
    # death signal: the runner must not go on to run the file as an orphan.
    test = tmp_path / "x.test.lua"
    test.write_text('local f = io.open(os.getenv("MARK"), "w") f:write("ran") f:close()\n')
    sp = tmp_path / "settings.json"
    sp.write_text(RunSettings(vmm="local").to_json())
    rfd, wfd = os.pipe()
    os.close(rfd)
    p = subprocess.run([sys.executable, "-m", "provium.runner", "--settings", str(sp), "--result",
                        str(tmp_path / "r.json"), "--events-fd", str(wfd), str(test)], pass_fds=(wfd,),
                       env=dict(os.environ, MARK=str(tmp_path / "mark")), capture_output=True, timeout=60)
    os.close(wfd)
    assert p.returncode == 2, p.stderr
    assert not (tmp_path / "mark").exists() and not (tmp_path / "r.json").exists()

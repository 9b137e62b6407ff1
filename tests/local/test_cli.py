"""The `provium` command end to end with `--vmm local`: real runner subprocesses, real Lua.

Each test runs the installed command in a subprocess, as a user would, and
checks exit codes, output shapes and the event stream.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provium.events import types as ev

LOCAL = ["--vmm", "local", "--no-progress"]

PASSING = """
test("adds", function(t) t:assert_eq(1 + 1, 2) end)
test("concatenates", function(t) t:assert_eq("a" .. "b", "ab") end)
"""

FAILING = """
test("fine", function(t) t:assert(true) end)
test("broken", {spec = "S-2"}, function(t) t:log("about to fail") t:assert_eq(1, 2, "numbers differ") end)
"""


def provium(*args, cwd=None, env=None, timeout=120, input=None):
    e = dict(os.environ)
    e.setdefault("PROVIUM_RERUN_STATE", os.path.join(cwd or os.getcwd(), ".rerun.json"))
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "provium.cli.main", *args], cwd=cwd, env=e,
                          capture_output=True, timeout=timeout, input=input)


def text(r) -> str:
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def write(p: Path, body: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


@pytest.fixture
def suite(tmp_path):
    write(tmp_path / "t" / "a_pass.test.lua", PASSING)
    write(tmp_path / "t" / "b_fail.test.lua", FAILING)
    return tmp_path


def test_pass_and_fail_output_and_exit_codes(suite):
    r = provium(*LOCAL, "t/a_pass.test.lua", cwd=suite)
    assert r.returncode == 0, text(r)
    out = r.stdout.decode()
    assert "PASS t/a_pass.test.lua (2 passed, 0 failed, 0 skipped)" in out
    assert out.rstrip().splitlines()[-1].startswith("1 file(s); 2 passed, 0 failed, 0 skipped; ")

    r = provium(*LOCAL, "t", cwd=suite)
    assert r.returncode == 1, text(r)
    out = r.stdout.decode()
    assert "FAIL t/b_fail.test.lua (1 passed, 1 failed, 0 skipped)" in out
    assert "    FAIL broken" in out and "numbers differ" in out and "log: about to fail" in out
    assert "2 file(s); 3 passed, 1 failed, 0 skipped" in out
    assert "Traceback" not in text(r)


def test_flags_after_paths(suite):
    r = provium("t/a_pass.test.lua", "--vmm", "local", "-v", "--no-progress", cwd=suite)
    assert r.returncode == 0, text(r)
    assert "    PASS adds" in r.stdout.decode()


def test_json_lines(suite):
    r = provium(*LOCAL, "--json", "t", cwd=suite)
    assert r.returncode == 1
    objs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [o["path"] for o in objs] == ["t/a_pass.test.lua", "t/b_fail.test.lua"]
    for o in objs:
        assert {"path", "timeout", "passed", "chunk_error", "tests"} <= set(o)
        assert o["timeout"] == "in_time" and o["chunk_error"] is None
        for t in o["tests"]:
            assert {"name", "status", "message", "log"} <= set(t)
    assert objs[0]["passed"] is True and objs[1]["passed"] is False
    broken = objs[1]["tests"][1]
    assert broken["status"] == "failed" and "numbers differ" in broken["message"]
    assert broken["log"] == ["about to fail"]


def test_junit_report(suite):
    r = provium(*LOCAL, "--junit", "missing/report.xml", "t", cwd=suite)
    assert r.returncode == 2 and b"directory" in r.stderr and b"does not exist" in r.stderr
    assert not (suite / "missing").exists()
    (suite / "out").mkdir()
    r = provium(*LOCAL, "--junit", "out/report.xml", "t", cwd=suite)
    assert r.returncode == 1
    root = ET.parse(suite / "out" / "report.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "1"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["t/a_pass.test.lua", "t/b_fail.test.lua"]
    failure = suites[1].find("testcase[@name='broken']/failure")
    assert failure is not None and "numbers differ" in failure.get("message")
    assert all(float(c.get("time")) >= 0 for c in root.iter("testcase"))


def test_chunk_error(tmp_path):
    write(tmp_path / "bad.test.lua", "test('x', function(t) end\n")  # missing `)`
    r = provium(*LOCAL, "bad.test.lua", cwd=tmp_path)
    assert r.returncode == 1, text(r)
    out = r.stdout.decode()
    assert "FAIL bad.test.lua" in out and "chunk_error:" in out
    assert "1 file(s) errored" in out


def test_fail_fast_stops_after_the_first_failing_file(tmp_path):
    write(tmp_path / "a.test.lua", PASSING)
    write(tmp_path / "b.test.lua", FAILING)
    write(tmp_path / "c.test.lua", PASSING)
    r = provium(*LOCAL, "--cpus", "1", "--fail-fast", "--json", ".", cwd=tmp_path)
    assert r.returncode == 1
    objs = {o["path"]: o for o in map(json.loads, r.stdout.decode().splitlines())}
    assert objs["a.test.lua"]["passed"] and not objs["b.test.lua"]["passed"]
    assert objs["c.test.lua"]["chunk_error"] == "skipped: --fail-fast" and objs["c.test.lua"]["tests"] == []


def test_fail_fast_text_shows_every_file_it_counts(tmp_path):
    # Two files side by side: b's chunk error ends first and stops the run; a fails a
    # second later.  The text listed a, then stopped printing at the first failing
    # file, so b's line was missing while the summary counted "1 file(s) errored".
    write(tmp_path / "a.test.lua", 'test("x", function(t) os.execute("sleep 1"); t:assert(false, "boom") end)\n')
    write(tmp_path / "b.test.lua", 'error("top level broke")\n')
    write(tmp_path / "c.test.lua", PASSING)
    r = provium(*LOCAL, "--cpus", "4", "--psi-threshold", "0", "--fail-fast", ".", cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 1, text(r)
    assert "FAIL a.test.lua" in out, out
    assert "1 file(s) errored" in out, out  # b ran: both started at once
    assert "FAIL b.test.lua" in out and "chunk_error: b.test.lua:1: top level broke" in out, out


def test_profiles_are_built_when_a_vm_of_them_first_boots_and_only_then(tmp_path):
    # --vmm qemu, yet no QEMU starts: the only profile booted has a failing build,
    # and the boot fails on it before anything is launched.
    write(tmp_path / "provium.toml", f"""
[profiles.broken]
kernel = "bz"
build = "echo b >> {tmp_path}/broken.log; exit 3"

[profiles.unused]
kernel = "bz"
build = "echo u >> {tmp_path}/unused.log; exit 4"
""")
    boot = """
test("boot", function(t)
  local ok, err = pcall(function() provium:vm("v", "broken"):boot() end)
  t:assert(not ok, "booted")
  t:assert(tostring(err):find("vm `v`: boot failed: profile `broken`: build command failed (exit code 3)", 1, true), err)
end)
"""
    write(tmp_path / "a.test.lua", boot)
    write(tmp_path / "b.test.lua", boot)
    write(tmp_path / "c.test.lua", PASSING)
    r = provium("--vmm", "qemu", "--no-preflight", "--no-progress", "--cpus", "4", "--psi-threshold", "0", ".",
                cwd=tmp_path)
    # Before: every profile's build ran before any file, and the first failure ended the run (exit 2).
    assert r.returncode == 0, text(r)
    assert (tmp_path / "broken.log").read_text() == "b\n"  # once for the run, though two files booted it
    assert not (tmp_path / "unused.log").exists()  # no file used it: never built, its failure costs nothing
    r = provium("--vmm", "qemu", "--no-preflight", "--no-progress", "c.test.lua", cwd=tmp_path)
    assert r.returncode == 0, text(r)
    assert (tmp_path / "broken.log").read_text() == "b\n"  # a run that boots nothing builds nothing


def test_a_file_name_that_is_not_utf8_runs_and_is_reported_with_escapes(tmp_path):
    # It was skipped with a notice; before that it crashed the runner.  Every report
    # shows the byte 0xff as `\\xff` (docs/running.md, "File names").
    name = b"caf\xe9-\xff.test.lua"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(b'test("ok", function(t) end)\ntest("bad", function(t) t:assert(false, "no") end)\n')
    shown = "caf\\xe9-\\xff.test.lua"
    events, junit = tmp_path / "ev.msgpack", tmp_path / "junit.xml"
    r = provium(*LOCAL, "--save-events", str(events), "--junit", str(junit), ".", cwd=tmp_path)
    out = r.stdout.decode("utf-8")  # strict: the output is valid UTF-8
    assert r.returncode == 1, text(r)
    assert f"FAIL {shown} (1 passed, 1 failed, 0 skipped)" in out, out
    assert f"{shown}:2: no" in out, out  # the Lua error's file:line names it the same way
    with open(events, "rb") as f:
        frames = list(ev.iter_events(f))
    paths = {getattr(fr.payload, "path", None) for fr in frames} - {None}
    assert paths == {shown}, paths
    tree = ET.parse(junit)
    assert {c.get("classname") for c in tree.iter("testcase")} == {shown.replace("/", ".")}
    r = provium(*LOCAL, "--json", ".", cwd=tmp_path)
    (obj,) = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
    assert obj["path"] == shown and [t["status"] for t in obj["tests"]] == ["passed", "failed"]
    r = provium("list", ".", cwd=tmp_path)
    assert r.returncode == 0 and f"  {shown}" in r.stdout.decode("utf-8"), text(r)
    assert "ok" in r.stdout.decode("utf-8") and "bad" in r.stdout.decode("utf-8")


def test_filter(suite):
    r = provium(*LOCAL, "--filter", "a_pass", "t", cwd=suite)
    assert r.returncode == 0 and "a_pass" in r.stdout.decode() and "b_fail" not in r.stdout.decode()
    r = provium(*LOCAL, "--filter", "nothing-matches", "t", cwd=suite)
    assert r.returncode == 0 and "no *.test.lua files found" in r.stdout.decode()


TAGGED = """
test("smoke", {tags = {"smoke"}}, function(t) end)
test("net", {tags = {"net", "smoke"}, area = "network"}, function(t) end)
test("plain", function(t) end)
test("slow", {slow = true}, function(t) end)
test("flaky", {flaky = "true"}, function(t) end)
"""


def statuses(r):
    (obj,) = [json.loads(line) for line in r.stdout.decode().splitlines()]
    return {t["name"]: t["status"] for t in obj["tests"]}, {t["name"]: t["message"] for t in obj["tests"]}


def test_tags_meta_and_slow(tmp_path):
    write(tmp_path / "tags.test.lua", TAGGED)
    r = provium(*LOCAL, "--json", "tags.test.lua", cwd=tmp_path)
    st, msg = statuses(r)
    assert st == {"smoke": "passed", "net": "passed", "plain": "passed", "slow": "skipped", "flaky": "passed"}
    assert "--include-slow" in msg["slow"]
    st, _ = statuses(provium(*LOCAL, "--json", "--include-slow", "tags.test.lua", cwd=tmp_path))
    assert st["slow"] == "passed"
    st, msg = statuses(provium(*LOCAL, "--json", "--tag", "smoke", "tags.test.lua", cwd=tmp_path))
    assert [n for n, s in st.items() if s == "passed"] == ["smoke", "net"]
    assert "--tag" in msg["plain"]
    st, _ = statuses(provium(*LOCAL, "--json", "--tag", "smoke", "--no-tag", "net", "tags.test.lua", cwd=tmp_path))
    assert [n for n, s in st.items() if s == "passed"] == ["smoke"]
    st, _ = statuses(provium(*LOCAL, "--json", "--tag-meta", "area=network", "tags.test.lua", cwd=tmp_path))
    assert [n for n, s in st.items() if s == "passed"] == ["net"]
    st, msg = statuses(provium(*LOCAL, "--json", "--no-tag-meta", "flaky=true", "tags.test.lua", cwd=tmp_path))
    assert st["flaky"] == "skipped" and "--no-tag-meta" in msg["flaky"]


def test_per_file_timeout_kills_the_runner(tmp_path):
    write(tmp_path / "hang.test.lua", """
test("quick", function(t) end)
test("spins", function(t) while true do end end)
""")
    write(tmp_path / "ok.test.lua", PASSING)
    t0 = time.monotonic()
    r = provium(*LOCAL, "--timeout", "1", ".", cwd=tmp_path, timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 1, text(r)
    out = r.stdout.decode()
    assert "TIME hang.test.lua" in out and "PASS ok.test.lua" in out
    assert "1 file(s) errored" in out


def test_crashed_runner_fails_only_its_file(tmp_path):
    write(tmp_path / "crash.test.lua", """
test("first", function(t) end)
test("kills its own runner", function(t) os.execute("kill -9 $PPID") end)
""")
    write(tmp_path / "ok.test.lua", PASSING)
    r = provium(*LOCAL, "--json", ".", cwd=tmp_path)
    assert r.returncode == 1, text(r)
    objs = {o["path"]: o for o in map(json.loads, r.stdout.decode().splitlines())}
    assert objs["ok.test.lua"]["passed"]
    crash = objs["crash.test.lua"]
    assert not crash["passed"] and crash["chunk_error"].startswith("crashed: ")
    assert "killed by SIGKILL" in crash["chunk_error"]
    assert [t["name"] for t in crash["tests"]] == ["first"]  # known from the event stream


def alive(pid) -> bool:
    """Running (a zombie waiting to be reaped counts as dead)."""
    try:
        return "(zombie)" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def runner_pids(provium_pid: int) -> list[str]:
    """The runners under a provium process: forked from its zygote (named `provium-runner`;
    their command line is the zygote's) or spawned (`python -m provium.runner`)."""
    import psutil

    out = []
    try:
        kids = psutil.Process(provium_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for k in kids:
        try:
            cmd = k.cmdline()
            if k.name() == "provium-runner" or ("provium.runner" in cmd and "provium.runner.zygote" not in cmd):
                out.append(str(k.pid))
        except psutil.Error:
            continue
    return out


def read_frames(data: bytes):
    return list(ev.iter_events(io.BytesIO(data)))


def test_save_events(suite):
    r = provium(*LOCAL, "--save-events", "ev.msgpack", "t/b_fail.test.lua", cwd=suite)
    assert r.returncode == 1
    frames = read_frames((suite / "ev.msgpack").read_bytes())
    kinds = [f.kind for f in frames]
    assert kinds.count("file_discovered") == 1 and kinds.count("file_dispatched") == 1
    assert kinds.count("test_passed") == 1 and kinds.count("test_failed") == 1
    assert kinds.count("file_completed") == 1
    assert kinds.index("file_discovered") < kinds.index("file_dispatched") < kinds.index("test_started")
    assert kinds.index("test_failed") < kinds.index("file_completed")
    done = [f for f in frames if f.kind == "file_completed"][0]
    assert done.payload.status == "failed" and done.payload.path == "t/b_fail.test.lua"
    failed = [f for f in frames if f.kind == "test_failed"][0]
    assert failed.payload.meta == {"spec": "S-2"} and "numbers differ" in failed.payload.reason
    # appends: a second run adds frames after the first ones
    provium(*LOCAL, "--save-events", "ev.msgpack", "t/a_pass.test.lua", cwd=suite)
    assert len(read_frames((suite / "ev.msgpack").read_bytes())) > len(frames)


def test_events_stdout_moves_text_to_stderr(suite):
    r = provium(*LOCAL, "--events-stdout", "t/a_pass.test.lua", cwd=suite)
    assert r.returncode == 0
    frames = read_frames(r.stdout)  # stdout holds nothing but frames
    assert [f.kind for f in frames if f.kind.startswith("test_")] == ["test_started", "test_passed"] * 2
    assert "PASS t/a_pass.test.lua" in r.stderr.decode()


def test_events_socket(tmp_path):
    write(tmp_path / "slow.test.lua", """
local t0 = os.time()
while os.time() - t0 < 2 do end
test("after a pause", function(t) end)
""")
    sock = tmp_path / "ev.sock"
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "--events-socket", str(sock),
                          "slow.test.lua"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.02)
        c = socket.socket(socket.AF_UNIX)
        c.connect(str(sock))
        with c.makefile("rb") as f:
            kinds = [fr.kind for fr in ev.iter_events(f)]  # until provium closes the socket
        assert "test_passed" in kinds and "file_completed" in kinds
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not sock.exists()


def test_coverage_after_the_run(suite):
    tmpdir = Path(os.environ.get("TMPDIR", "/tmp"))
    before = set(tmpdir.glob("provium-coverage-*"))
    r = provium(*LOCAL, "--coverage", "t", cwd=suite)
    assert r.returncode == 1
    out = r.stdout.decode()
    assert "coverage by meta `spec`:" in out
    assert "S-2" in out and "failing" in out
    # The temporary stream is removed (stale ones of killed runs may be swept too).
    assert set(tmpdir.glob("provium-coverage-*")) - before == set()


def test_provium_coverage_reads_a_saved_stream(suite):
    provium(*LOCAL, "--save-events", "ev.msgpack", "t", cwd=suite)
    r = subprocess.run([sys.executable, "-m", "provium.cli.coverage", "--from", "ev.msgpack", "--json"],
                       cwd=suite, capture_output=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["buckets"]["S-2"]["failed"] == 1 and data["unset"]["passed"] == 3


def test_rerun_failed_and_since(suite):
    env = {"PROVIUM_RERUN_STATE": str(suite / "state.json")}
    r = provium(*LOCAL, "t", cwd=suite, env=env)
    assert r.returncode == 1
    r = provium(*LOCAL, "--rerun-failed", "t", cwd=suite, env=env)
    out = r.stdout.decode()
    assert "b_fail" in out and "a_pass" not in out and "1 file(s)" in out
    # --since: only files newer than the reference
    ref = suite / "ref"
    ref.write_text("")
    old = time.time() - 100
    os.utime(suite / "t" / "b_fail.test.lua", (old, old))
    os.utime(ref, (old + 10, old + 10))
    r = provium(*LOCAL, "--since", "ref", "t", cwd=suite)
    assert r.returncode == 0 and "a_pass" in r.stdout.decode() and "b_fail" not in r.stdout.decode()


def test_watch_reruns_on_change(tmp_path):
    f = write(tmp_path / "w.test.lua", PASSING)
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "--watch", "."], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []

        def wait_for(needle, n=1):
            deadline = time.monotonic() + 30
            while sum(needle in l for l in lines) < n:
                assert time.monotonic() < deadline, f"no {needle!r} in {lines}"
                lines.append(p.stdout.readline())
        wait_for("file(s);")
        time.sleep(0.1)
        f.write_text(FAILING)
        wait_for("change detected")
        wait_for("file(s);", 2)
        assert any("FAIL w.test.lua" in l for l in lines)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_list_subcommand(suite):
    r = provium("--vmm", "local", "list", "t", cwd=suite)
    assert r.returncode == 0, text(r)
    out = r.stdout.decode()
    assert "  t/a_pass.test.lua" in out and "  t/b_fail.test.lua" in out
    assert "2 test file(s)" in out


def test_default_config_is_picked_up_and_checked(tmp_path):
    write(tmp_path / "a.test.lua", PASSING)
    write(tmp_path / "provium.toml", "this is = = not toml")
    r = provium(*LOCAL, cwd=tmp_path)
    assert r.returncode == 2 and "parse `provium.toml`" in text(r) and "Traceback" not in text(r)
    write(tmp_path / "provium.toml", '[provium]\nroots = ["."]\n')
    r = provium(*LOCAL, cwd=tmp_path)
    assert r.returncode == 0, text(r)


def test_sigterm_stops_runners_and_cleans_up(tmp_path):
    write(tmp_path / "spin.test.lua", """
test("spins", function(t) local t0 = os.time() while os.time() - t0 < 60 do end end)
""")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PROVIUM_RERUN_STATE=str(tmp_path / "rr.json"))
    (tmp_path / "tmp").mkdir()
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "spin.test.lua"], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not list((tmp_path / "tmp").glob("provium-run-*/0.log")):
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        # The log is opened before the runner is spawned: under load the child may not
        # have exec'd (and so show its command line) yet.
        while True:
            runners = runner_pids(p.pid)
            if runners:
                break
            assert time.monotonic() < deadline, "no runner process found"
            time.sleep(0.05)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 2
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert b"interrupted" in p.stderr.read()
    assert list((tmp_path / "tmp").iterdir()) == []  # work dir removed
    time.sleep(0.2)
    for pid in runners:
        assert not alive(pid), f"runner {pid} outlived provium"


def test_unknown_profile_in_a_test_file(tmp_path):
    write(tmp_path / "p.test.lua", """
test("uses a profile that does not exist", function(t)
  provium:vm("x", "no-such-profile"):boot()
end)
""")
    r = provium(*LOCAL, "--json", "p.test.lua", cwd=tmp_path)
    assert r.returncode == 1, text(r)
    (obj,) = [json.loads(line) for line in r.stdout.decode().splitlines()]
    msg = obj["tests"][0]["message"] if obj["tests"] else obj["chunk_error"]
    assert "no-such-profile" in msg and "not found" in msg
    assert "Traceback" not in text(r)


def test_cpu_overcommit_clamp_notice(tmp_path):
    write(tmp_path / "a.test.lua", PASSING)
    r = provium(*LOCAL, "--cpu-overcommit", "100", "a.test.lua", cwd=tmp_path)
    assert r.returncode == 0 and "clamped to 8" in r.stderr.decode()
    r = provium(*LOCAL, "--cpu-overcommit", "1.5", "a.test.lua", cwd=tmp_path)
    assert r.returncode == 0 and "clamped" not in r.stderr.decode()


def test_runners_die_with_a_killed_provium(tmp_path):
    write(tmp_path / "spin.test.lua", """
test("spins", function(t) local t0 = os.time() while os.time() - t0 < 60 do end end)
""")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PROVIUM_RERUN_STATE=str(tmp_path / "rr.json"))
    (tmp_path / "tmp").mkdir()
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "spin.test.lua"], cwd=tmp_path,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        pids = []
        while not pids:
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.1)
            pids = runner_pids(p.pid)
        time.sleep(0.5)  # let the runner get past its start-up
        p.kill()
        p.wait()
        deadline = time.monotonic() + 10
        for pid in pids:
            while alive(pid):
                assert time.monotonic() < deadline, f"runner {pid} outlived a SIGKILLed provium"
                time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_test_stuck_in_c_code_is_named_and_later_tests_listed(tmp_path):
    # A pathological pattern: Lua's matcher backtracks for minutes inside one C call,
    # where the count hook cannot fire; the runner must give up on it cleanly.
    write(tmp_path / "stuck.test.lua", """
test("first", function(t) end)
test("stuck in C", {timeout = "300ms"}, function(t)
  string.find(string.rep("a", 60), string.rep("a?", 60) .. string.rep("a", 60))
end)
test("later", function(t) end)
""")
    t0 = time.monotonic()
    r = provium(*LOCAL, "--json", "stuck.test.lua", cwd=tmp_path, timeout=60)
    assert time.monotonic() - t0 < 30
    [obj] = [json.loads(line) for line in r.stdout.decode().splitlines()]
    tests = {t["name"]: t for t in obj["tests"]}
    assert list(tests) == ["first", "stuck in C", "later"], text(r)
    assert tests["first"]["status"] == "passed"
    assert tests["stuck in C"]["status"] == "failed"
    assert tests["stuck in C"]["message"].startswith("test timeout exceeded (300ms)")
    assert tests["later"]["status"] == "skipped" and tests["later"]["message"].startswith("not run:")
    assert r.returncode == 1



def test_killed_runners_leave_no_qemu_scratch_dir(tmp_path):
    """After Ctrl-C or SIGTERM the dispatcher kills its runners, which cannot clean
    up: it removes their `provium-qemu-<runner pid>` scratch dirs itself."""
    write(tmp_path / "spin.test.lua", f"""
local f = io.open("/proc/self/stat"); local pid = f:read("a"):match("^(%d+)"); f:close()
os.execute("mkdir -p {tmp_path}/provium-qemu-" .. pid .. "/vm-1 && touch {tmp_path}/provium-qemu-" .. pid .. "/vm-1/console.log")
test("spin", function(t) while true do end end)
""")
    env = dict(os.environ, TMPDIR=str(tmp_path), PROVIUM_RERUN_STATE=str(tmp_path / ".rerun.json"))
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "spin.test.lua"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("provium-qemu-*/vm-1/console.log")):
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert list(tmp_path.glob("provium-qemu-*")) == []


def test_list_reports_chunk_errors_and_has_the_file_timeout(tmp_path):
    write(tmp_path / "ok.test.lua", 'test("fine", function(t) end)\n')
    write(tmp_path / "broken.test.lua", 'error("top level broke")\ntest("never", function(t) end)\n')
    r = provium("list", ".", cwd=tmp_path)
    assert r.returncode == 1, text(r)
    assert "top level broke" in text(r) and "fine" in text(r)
    write(tmp_path / "broken.test.lua", 'while true do end\n')
    t0 = time.monotonic()
    r = provium("--timeout", "1", "list", ".", cwd=tmp_path, timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 1 and "file timeout exceeded (1s) while listing" in text(r), text(r)


def test_list_takes_run_flags_after_the_subcommand(tmp_path):
    write(tmp_path / "net" / "dns.test.lua", 'test("resolves", function(t) end)\n')
    write(tmp_path / "fs" / "io.test.lua", 'test("reads", function(t) end)\n')
    for args in (["list", "--filter", "net", "."], ["list", ".", "--filter=net"], ["--filter", "net", "list", "."]):
        r = provium(*args, cwd=tmp_path)
        assert r.returncode == 0, (args, text(r))
        assert "dns.test.lua" in text(r) and "io.test.lua" not in text(r), (args, text(r))

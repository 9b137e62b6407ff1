"""Scheduler: discovery, pool sizing, and dispatch to runner subprocesses.

Dispatch is tested with a stand-in runner (tests/unit/fake_runner.py) that speaks
the runner's command-line contract, so process handling is tested on its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from provium.events import types as ev
from provium.events.sinks import CallbackSink
from provium.scheduler import discovery
from provium.scheduler.dispatch import FAIL_FAST_REASON, Dispatcher, DispatchOptions
from provium.scheduler.pool import FILE_OVERHEAD, size_pool

FAKE = str(Path(__file__).with_name("fake_runner.py"))
HERE = str(Path(__file__).parent)
# The zygote with the stand-in runner as its entry (fake_entry.py), for the same cases forked.
FAKE_ZYGOTE = [sys.executable, "-m", "provium.runner.zygote", "--entry", "fake_entry:main",
               "--preload", "provium.events.sinks"]


def zygote_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH", "")) if p)
    return env


def write(p: Path, text: str = "") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ---- discovery ----------------------------------------------------------------------


def test_discovery_is_recursive_sorted_and_only_test_files(tmp_path):
    write(tmp_path / "b.test.lua")
    write(tmp_path / "a" / "z.test.lua")
    write(tmp_path / "a" / "helper.lua")
    write(tmp_path / "a" / "base.fixture.lua")
    write(tmp_path / "c.test.lua.bak")
    found = discovery.discover([str(tmp_path)])
    assert [d.rel for d in found] == ["a/z.test.lua", "b.test.lua"]
    assert all(d.path.startswith(str(tmp_path)) for d in found)
    fx = discovery.discover([str(tmp_path)], suffix=discovery.FIXTURE_SUFFIX)
    assert [d.rel for d in fx] == ["a/base.fixture.lua"]


def test_discovery_filter_and_direct_files(tmp_path):
    write(tmp_path / "net" / "dns.test.lua")
    write(tmp_path / "disk" / "eio.test.lua")
    assert [d.rel for d in discovery.discover([str(tmp_path)], filter="net/")] == ["net/dns.test.lua"]
    direct = str(tmp_path / "disk" / "eio.test.lua")
    assert [d.path for d in discovery.discover([direct])] == [direct]
    # a file given directly has the relative path "", so any filter drops it (reference behaviour)
    assert discovery.discover([direct], filter="eio") == []


def test_discovery_bad_paths(tmp_path):
    with pytest.raises(discovery.DiscoveryError, match="does not exist"):
        discovery.discover([str(tmp_path / "nope")])
    write(tmp_path / "x.lua")
    with pytest.raises(discovery.DiscoveryError, match=r"not a `\*.test.lua` file"):
        discovery.discover([str(tmp_path / "x.lua")])


def test_default_cwd_paths_are_clean(tmp_path, monkeypatch):
    write(tmp_path / "a.test.lua")
    monkeypatch.chdir(tmp_path)
    assert [d.path for d in discovery.discover(["."])] == ["a.test.lua"]


def test_fixture_refs_and_since(tmp_path):
    f = write(tmp_path / "x.test.lua", 'local a = provium:vm_fixture("base")\n'
                                       "local b = provium.lab_fixture(provium, 'net/two')\n"
                                       'provium:vm_fixture("base")\n')
    assert discovery.fixture_refs(str(f)) == ["base", "net/two", "base"]
    ref = write(tmp_path / "ref")
    old = time.time() - 100
    os.utime(f, (old, old))
    found = discovery.discover([str(tmp_path)])
    assert discovery.newer_than(found, str(ref)) == []
    os.utime(f, None)
    os.utime(ref, (old - 10, old - 10))
    assert len(discovery.newer_than(found, str(ref))) == 1
    assert discovery.newer_than(found, str(tmp_path / "missing")) == found  # unreadable: no filtering


# ---- pool -------------------------------------------------------------------------


def test_pool_sizing_and_overcommit_clamp():
    notes = []
    p = size_pool(vmm="local", memory=1 << 30, cpus=4, overcommit=1.0, warn=notes.append)
    assert p.slots == 4 and p.total.cpus == 4 and notes == []
    p = size_pool(vmm="local", memory=1 << 30, cpus=2, overcommit=100, warn=notes.append)
    assert p.total.cpus == 16 and "clamped to 8" in notes[-1]
    p = size_pool(vmm="local", memory=1 << 30, cpus=3, overcommit=0.1, warn=notes.append)
    assert p.total.cpus == 2 and "clamped to 0.5" in notes[-1]  # round(3 * 0.5)
    # on qemu a file holds only its overhead (its VMs are charged as they boot)
    p = size_pool(vmm="qemu", memory=1 << 30, cpus=8)
    assert p.per_file == ev.ResourceAmount(FILE_OVERHEAD, 0) and p.charge_vms
    assert p.slots == (1 << 30) // FILE_OVERHEAD
    # on local a file's "VMs" are host processes: the file itself holds a CPU
    p = size_pool(vmm="local", memory=1 << 30, cpus=3)
    assert p.per_file == ev.ResourceAmount(FILE_OVERHEAD, 1) and not p.charge_vms and p.slots == 3


# ---- dispatch ---------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.frames: list[ev.EventFrame] = []
        self.sink = CallbackSink(self.frames.append)

    def kinds(self, path=None):
        return [f.kind for f in self.frames if path is None or getattr(f.payload, "path", None) == path]


def run_files(tmp_path, specs: dict[str, dict], *, slots=2, timeout=None, fail_fast=False, mode="spawn"):
    """Run `specs` through a Dispatcher; mode "zygote" forks every runner from a zygote (and
    checks that none was spawned instead)."""
    files = []
    for name, spec in specs.items():
        p = write(tmp_path / "t" / name, json.dumps(spec))
        files.append(discovery.Discovered(path=str(p), root=str(tmp_path / "t"), rel=name))
    files.sort(key=lambda d: d.path)
    rec = Recorder()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    pool = size_pool(vmm="local", memory=1 << 30, cpus=slots)
    opts = DispatchOptions(settings_json=json.dumps({"vmm": "local"}), work_dir=str(work), pool=pool,
                           file_timeout=timeout, fail_fast=fail_fast, runner_cmd=[sys.executable, FAKE],
                           kill_grace=0.0, psi_paths=(),  # the host's own pressure must not gate these
                           zygote=mode == "zygote", zygote_cmd=FAKE_ZYGOTE,
                           env=zygote_env() if mode == "zygote" else None)
    done = []
    d = Dispatcher(rec.sink, opts, on_file_done=lambda i, r: done.append(i))
    results = d.run(files)
    if mode == "zygote":
        assert d.spawn_reason is None, d.spawn_reason
    return files, results, rec, done


MODES = pytest.mark.parametrize("mode", ["spawn", "zygote"])


@MODES
def test_results_in_input_order_with_events_forwarded_in_order(tmp_path, mode):
    specs = {
        "a.test.lua": {"tests": [{"name": "one", "sleep": 1.0}, {"name": "two", "status": "failed", "message": "boom"}]},
        "b.test.lua": {"tests": [{"name": "x", "status": "skipped", "message": "later", "bytes_meta": {"spec": "01"}}]},
    }
    files, results, rec, done = run_files(tmp_path, specs, mode=mode)
    assert [r.path for r in results] == [f.path for f in files]
    a, b = results
    assert a.summary() == (1, 1, 0) and not a.passed and a.status == "failed"
    assert a.tests[1].message == "boom"
    assert b.summary() == (0, 0, 1) and b.passed and b.status == "passed"
    assert rec.kinds(files[0].path) == ["file_dispatched", "test_started", "test_passed", "test_started",
                                        "test_failed", "file_completed"]
    # meta bytes survive the trip through the runner's pipe
    skipped = [f for f in rec.frames if f.kind == "test_skipped"][0]
    assert skipped.payload.meta == {"spec": b"\x01"}
    completed = {f.payload.path: f.payload.status for f in rec.frames if f.kind == "file_completed"}
    assert completed == {files[0].path: "failed", files[1].path: "passed"}
    assert "pool_state" in rec.kinds()
    assert sorted(done) == [0, 1] and done[0] == 1  # b finished first: completion order, not input order


def test_files_run_in_parallel_up_to_the_slot_count(tmp_path):
    rec_file = tmp_path / "record.txt"
    specs = {f"{i}.test.lua": {"tests": [{"name": "t", "sleep": 0.4}], "record": str(rec_file)} for i in range(4)}
    files, results, rec, _ = run_files(tmp_path, specs, slots=2)
    assert all(r.passed for r in results)
    spans = {}
    for line in rec_file.read_text().splitlines():
        path, what, t = line.split()
        spans.setdefault(path, {})[what] = float(t)
    # never more than 2 at once, and at some moment exactly 2
    points = sorted(t for s in spans.values() for t in (s["start"], s["end"]))
    def running_at(t):
        return sum(1 for s in spans.values() if s["start"] <= t < s["end"])
    assert max(running_at(t) for t in points) == 2
    # the two files beyond the slot count were reported as blocked on a full pool
    blocked = [f.payload for f in rec.frames if f.kind == "file_blocked"]
    assert [b.path for b in blocked] == [files[2].path, files[3].path] and blocked[0].reason == "pool_full"
    assert blocked[0].waiting_for.memory_bytes > 0


def test_one_slot_serialises(tmp_path):
    rec_file = tmp_path / "record.txt"
    specs = {f"{i}.test.lua": {"tests": [{"name": "t", "sleep": 0.1}], "record": str(rec_file)} for i in range(3)}
    run_files(tmp_path, specs, slots=1)
    lines = [l.split() for l in rec_file.read_text().splitlines()]
    assert [w for _, w, _ in lines] == ["start", "end"] * 3


@MODES
def test_timeout_kills_the_runner_group_and_keeps_finished_tests(tmp_path, mode):
    child_pid_file = tmp_path / "child.pid"
    specs = {"slow.test.lua": {"tests": [{"name": "quick"}, {"name": "stuck", "sleep": 30}],
                               "spawn_child": str(child_pid_file)},
             "fine.test.lua": {"tests": [{"name": "ok"}]}}
    # spawn_child happens after tests, so make the stuck test the thing that hangs; a second
    # file checks that the grandchild case is covered separately below
    t0 = time.monotonic()
    files, results, rec, _ = run_files(tmp_path, specs, timeout=1.0, mode=mode)
    assert time.monotonic() - t0 < 10
    fine, slow = results
    assert fine.passed
    assert slow.timed_out and slow.status == "timed_out" and not slow.passed
    assert [(t.name, t.status) for t in slow.tests] == [("quick", "passed"), ("stuck", "timed_out")]
    assert [f.payload.status for f in rec.frames if f.kind == "file_completed" and f.payload.path == slow.path] == ["timed_out"]


@MODES
def test_timeout_kills_grandchildren(tmp_path, mode):
    pid_file = tmp_path / "child.pid"
    specs = {"g.test.lua": {"tests": [], "spawn_child": str(pid_file), "hang": 30}}
    files, results, rec, _ = run_files(tmp_path, specs, timeout=1.0, mode=mode)
    assert results[0].timed_out
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            break
        if "(zombie)" in state:  # dead, waiting for init to reap it
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {pid} outlived the killed runner")


@pytest.mark.parametrize("crash,needle", [
    ("signal", "killed by SIGKILL"),
    ("exit", "exited with status 3"),
    ("no_result", "without writing a result"),
    ("bad_result", "unusable result"),
    ("segfault", "killed by SIGSEGV"),
    ("os_exit", "exited with status 5"),
])
@MODES
def test_a_crashed_runner_fails_its_file_only(tmp_path, crash, needle, mode):
    specs = {"a.test.lua": {"tests": [{"name": "ran"}], "crash": crash},
             "b.test.lua": {"tests": [{"name": "ok"}]}}
    files, results, rec, _ = run_files(tmp_path, specs, mode=mode)
    a, b = results
    assert b.passed
    assert a.crashed and not a.passed and a.status == "crashed"
    assert needle in a.chunk_error and a.chunk_error.startswith("crashed: ")
    if crash == "exit":
        assert "runner: something broke" in a.chunk_error  # the runner's stderr is kept
    assert [t.name for t in a.tests] == ["ran"]  # what the event stream showed is kept


def test_fail_fast_stops_dispatching(tmp_path):
    specs = {"1.test.lua": {"tests": [{"name": "t"}]},
             "2.test.lua": {"tests": [{"name": "t", "status": "failed", "message": "no"}]},
             "3.test.lua": {"tests": [{"name": "t"}]},
             "4.test.lua": {"tests": [{"name": "t"}]}}
    files, results, rec, _ = run_files(tmp_path, specs, slots=1, fail_fast=True)
    assert [r.passed for r in results] == [True, False, False, False]
    assert [r.not_run for r in results] == [None, None, FAIL_FAST_REASON, FAIL_FAST_REASON]
    dispatched = [f.payload.path for f in rec.frames if f.kind == "file_dispatched"]
    assert dispatched == [files[0].path, files[1].path]
    assert len([f for f in rec.frames if f.kind == "file_completed"]) == 2


@MODES
def test_runner_output_is_captured(tmp_path, mode):
    specs = {"p.test.lua": {"tests": [{"name": "t"}], "print": "hello from lua print"}}
    _, results, _, _ = run_files(tmp_path, specs, mode=mode)
    assert "hello from lua print" in results[0].output

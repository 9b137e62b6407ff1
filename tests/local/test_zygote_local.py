"""The real runner forked from the zygote, with real Lua and the local backend.

The same files give the same results and the same event stream forked or spawned
(`--no-zygote`), a file timeout kills a forked runner's whole tree, and a runner
that dies at once fails only its own file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from provium.runner.settings import RunSettings
from provium.scheduler import discovery
from provium.scheduler.dispatch import Dispatcher, DispatchOptions
from provium.scheduler.pool import size_pool
from provium.scheduler.zygote_client import ForkedProc

from test_cli import LOCAL, PASSING, FAILING, provium, write
from proc_checks import gone



def _normalise(value):
    """A --json record with what differs between any two runs (durations) removed."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items() if not k.endswith("_ns")}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def test_forked_and_spawned_runs_give_the_same_results_and_events(tmp_path):
    write(tmp_path / "t" / "a_pass.test.lua", PASSING)
    write(tmp_path / "t" / "b_fail.test.lua", FAILING)
    write(tmp_path / "t" / "c_vm.test.lua",
          'test("vm", function(t)\n  local vm = provium:vm("a", "linux"):boot()\n'
          '  t:assert_eq(vm:run("echo hi").stdout, "hi\\n")\nend)\n')
    # The runner's process name says how it was started ("provium-runner" when forked).
    write(tmp_path / "t" / "d_name.test.lua",
          'test("name", function(t)\n  local f = io.open("/proc/self/comm")\n  local name = f:read("l")\n'
          '  f:close()\n  local out = io.open(os.getenv("NAME_OUT"), "w")\n  out:write(name)\n  out:close()\nend)\n')
    runs = {}
    names = {}
    for mode, extra in (("zygote", []), ("flag", ["--no-zygote"]), ("env", [])):
        env = {"NAME_OUT": str(tmp_path / f"{mode}.name")}
        if mode == "env":
            env["PROVIUM_NO_ZYGOTE"] = "1"
        r = provium(*LOCAL, "--json", *extra, "t", cwd=tmp_path, env=env)
        assert r.returncode == 1, r.stderr.decode()
        assert b"runner process for each file" not in r.stderr  # no fallback note: on or off by choice
        runs[mode] = [_normalise(json.loads(x)) for x in r.stdout.decode().splitlines() if x.strip()]
        names[mode] = (tmp_path / f"{mode}.name").read_text()
    assert runs["zygote"] == runs["flag"] == runs["env"]
    assert names["zygote"] == "provium-runner"  # the CLI's zygote forked it
    assert names["flag"] != "provium-runner" and names["env"] != "provium-runner"
    statuses = [(t["name"], t["status"]) for d in runs["zygote"] for t in d.get("tests", [])]
    assert ("vm", "passed") in statuses and ("broken", "failed") in statuses


def _dispatch(tmp_path: Path, files: dict[str, str], *, timeout=None, slots=2, while_running=None):
    ds = []
    for name, body in files.items():
        p = write(tmp_path / "t" / name, body)
        ds.append(discovery.Discovered(path=str(p), root=str(p.parent), rel=name))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    settings = RunSettings(vmm="local", file_timeout=None)  # only the dispatcher's watchdog
    opts = DispatchOptions(settings_json=settings.to_json(), work_dir=str(work),
                           pool=size_pool(vmm="local", memory=1 << 30, cpus=slots), file_timeout=timeout,
                           kill_grace=0.0, psi_paths=())
    assert opts.use_zygote()
    seen: list[object] = []
    d = Dispatcher(_Sink(seen), opts)
    procs: list[object] = []
    orig = d._start

    def start(index, fs):
        orig(index, fs)
        procs.append(d._running[index].proc)

    d._start = start  # type: ignore[method-assign]
    helper = None
    if while_running is not None:
        helper = threading.Thread(target=while_running, args=(procs,))
        helper.start()
    results = d.run(sorted(ds, key=lambda x: x.path))
    if helper is not None:
        helper.join()
    assert d.spawn_reason is None, d.spawn_reason
    assert procs and all(isinstance(p, ForkedProc) for p in procs)
    return results


class _Sink:
    def __init__(self, seen: list) -> None:
        self.seen = seen

    def emit(self, event) -> None:
        self.seen.append(event)

    def emit_frame(self, frame) -> None:
        self.seen.append(frame)


def test_a_file_timeout_kills_the_forked_runners_tree(tmp_path):
    pidfile = tmp_path / "sleep.pid"
    body = ('test("hangs", {timeout = "10m"}, function(t)\n'
            '  local vm = provium:vm("a", "linux"):boot()\n'
            f'  vm:run("echo $$ > {pidfile}; exec sleep 300")\nend)\n')
    t0 = time.monotonic()
    (res,) = _dispatch(tmp_path, {"hang.test.lua": body}, timeout=4.0)
    assert time.monotonic() - t0 < 60
    assert res.timed_out and [t.status for t in res.tests] == ["timed_out"]
    assert pidfile.exists(), res.output
    assert gone(int(pidfile.read_text())), "the guest command outlived its killed runner"


def test_a_runner_that_crashes_fails_only_its_file(tmp_path):
    # Lua cannot crash its runner (no os.exit), so the crash comes from outside: SIGSEGV,
    # as a fault in C code (lupa, a library) would deliver it, once the file has started.
    marker = tmp_path / "started"
    files = {"a_dies.test.lua": f'test("dies", function(t) io.open("{marker}", "w"):close() '
                                'while true do end end)\n',
             "b_fine.test.lua": PASSING}

    def crash_a(procs: list) -> None:
        deadline = time.monotonic() + 60
        while not (marker.exists() and procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(procs[0].pid, signal.SIGSEGV)

    a, b = _dispatch(tmp_path, files, while_running=crash_a)
    assert b.passed and [t.status for t in b.tests] == ["passed", "passed"]
    assert a.crashed and "killed by SIGSEGV" in a.chunk_error, a.chunk_error


def test_every_file_gets_a_fresh_lua_state(tmp_path):
    # A global set by one file is not seen by the next one forked from the same zygote.
    files = {f"{i}.test.lua": ('test("fresh", function(t) t:assert_eq(LEAK, nil) LEAK = 1 '
                               'package.loaded.leak = true end)\n') for i in range(4)}
    results = _dispatch(tmp_path, files, slots=1)
    assert all(r.passed for r in results), [r.tests for r in results]


_LEFT_BEHIND = """
import json, sys, psutil
from provium.cli.main import dispatch
code = dispatch(sys.argv[1:])
print(json.dumps({"code": code, "children": [p.name() for p in psutil.Process().children(recursive=True)]}))
"""


def test_a_run_that_ends_before_dispatch_leaves_no_zygote(tmp_path):
    # The CLI starts the zygote before it reads the config; a run that stops early
    # (here: a bad config) must stop it too.
    write(tmp_path / "provium.toml", "this is not toml = = =\n")
    write(tmp_path / "t" / "a.test.lua", PASSING)
    r = subprocess.run([sys.executable, "-c", _LEFT_BEHIND, *LOCAL, "t"], cwd=tmp_path, capture_output=True,
                       timeout=120)
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out["code"] == 2, r.stderr.decode()
    assert out["children"] == []

"""The runner zygote: what a forked runner inherits, and every way back to spawning runners.

The cases a forked runner shares with a spawned one (crashes, timeouts, events,
output) run in both modes in test_cli_scheduler.py; here are the zygote's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from provium.scheduler import discovery
from provium.scheduler.dispatch import Dispatcher, DispatchOptions
from provium.scheduler.pool import size_pool
from provium.scheduler.zygote_client import ENV_OFF, ForkedProc

from test_cli_scheduler import FAKE, FAKE_ZYGOTE, HERE, Recorder, write, zygote_env
from proc_checks import gone


def _files(tmp_path: Path, specs: dict[str, dict]) -> list[discovery.Discovered]:
    out = []
    for name, spec in specs.items():
        p = write(tmp_path / "t" / name, json.dumps(spec))
        out.append(discovery.Discovered(path=str(p), root=str(tmp_path / "t"), rel=name))
    return sorted(out, key=lambda d: d.path)


def _dispatcher(tmp_path: Path, *, slots=2, timeout=None, **kw) -> tuple[Dispatcher, Recorder]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    kw.setdefault("zygote", True)
    kw.setdefault("zygote_cmd", FAKE_ZYGOTE)
    kw.setdefault("env", zygote_env())
    opts = DispatchOptions(settings_json=json.dumps({"vmm": "local"}), work_dir=str(work),
                           pool=size_pool(vmm="local", memory=1 << 30, cpus=slots), file_timeout=timeout,
                           runner_cmd=[sys.executable, FAKE], kill_grace=0.0, psi_paths=(), **kw)
    rec = Recorder()
    return Dispatcher(rec.sink, opts), rec



def test_a_forked_runner_inherits_one_thread_no_descriptors_and_its_own_group(tmp_path):
    report = tmp_path / "report.json"
    d, _ = _dispatcher(tmp_path)
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}], "report": str(report)}}))
    assert results[0].passed and d.spawn_reason is None
    r = json.loads(report.read_text())
    assert r["threads"] == 1
    assert r["pid"] == r["pgid"] == r["sid"]  # its own session: the watchdog's killpg reaches only its tree
    assert r["ppid"] != os.getpid()  # forked by the zygote, not by us
    # stdin, stdout, stderr, the event pipe (3) and the one listdir used to look: nothing of the zygote's
    assert len(r["fds"]) <= 5 and set(r["fds"]) >= {0, 1, 2, 3}


def test_the_default_preload_starts_no_thread(tmp_path):
    """The real preload list (lupa, the host model, both backends) with the stand-in entry:
    the zygote accepts it (no thread, no event loop after those imports) and the child has one thread."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "provium.runner.zygote", "--entry", "fake_entry:main"]
    d, _ = _dispatcher(tmp_path, zygote_cmd=cmd)
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}], "report": str(report)}}))
    assert results[0].passed and d.spawn_reason is None
    r = json.loads(report.read_text())
    assert r["threads"] == 1
    assert r["modules"] > 200  # the heavy imports came with the fork


@pytest.mark.parametrize("preload_src,needle", [
    ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n", "threads"),
    ("import asyncio\nLOOP = asyncio.new_event_loop()\n", "asyncio event loop"),
])
def test_a_zygote_with_a_thread_or_loop_refuses_and_runners_are_spawned(tmp_path, capfd, preload_src, needle):
    mod = tmp_path / "mods" / "hazard_mod.py"
    write(mod, preload_src)
    env = zygote_env()
    env["PYTHONPATH"] += os.pathsep + str(mod.parent)
    cmd = [*FAKE_ZYGOTE, "--preload", "hazard_mod"]
    d, _ = _dispatcher(tmp_path, zygote_cmd=cmd, env=env)
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}]},
                                      "b.test.lua": {"tests": [{"name": "t"}]}}))
    assert all(r.passed for r in results)
    assert d.spawn_reason is not None and needle in d.spawn_reason
    err = capfd.readouterr().err
    assert needle in err and "starting a new runner process for each file instead" in err
    assert err.count("provium: ") == 1  # said once, not per file


def test_a_zygote_that_cannot_start_falls_back_to_spawning(tmp_path, capfd):
    d, _ = _dispatcher(tmp_path, zygote_cmd=[sys.executable, "-c", "import sys; print('no luck'); sys.exit(7)"])
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}]}}))
    assert results[0].passed
    assert "exited with status 7" in d.spawn_reason and "no luck" in d.spawn_reason
    assert "exited with status 7" in capfd.readouterr().err


def test_a_missing_preload_module_falls_back(tmp_path):
    d, _ = _dispatcher(tmp_path, zygote_cmd=[*FAKE_ZYGOTE, "--preload", "no_such_module_here"])
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}]}}))
    assert results[0].passed
    assert "could not start" in d.spawn_reason and "no_such_module_here" in d.spawn_reason


def test_turned_off_spawns_every_runner_quietly(tmp_path, capfd):
    report = tmp_path / "report.json"
    d, _ = _dispatcher(tmp_path, zygote=False)
    results = d.run(_files(tmp_path, {"a.test.lua": {"tests": [{"name": "t"}], "report": str(report)}}))
    assert results[0].passed and d.zygote is None and d.spawn_reason == "the zygote is turned off"
    assert json.loads(report.read_text())["ppid"] == os.getpid()  # our own child: spawned
    assert capfd.readouterr().err == ""


def test_auto_uses_the_zygote_only_for_the_real_runner():
    opts = DispatchOptions(settings_json="{}", work_dir="/tmp", pool=size_pool(vmm="local"), env={})
    assert opts.use_zygote()
    assert not DispatchOptions(settings_json="{}", work_dir="/tmp", pool=size_pool(vmm="local"), env={},
                               runner_cmd=[sys.executable, FAKE]).use_zygote()
    assert not DispatchOptions(settings_json="{}", work_dir="/tmp", pool=size_pool(vmm="local"),
                               env={ENV_OFF: "1"}).use_zygote()
    assert DispatchOptions(settings_json="{}", work_dir="/tmp", pool=size_pool(vmm="local"),
                           env={ENV_OFF: "0"}).use_zygote()


def test_a_dead_zygote_fails_its_running_files_and_the_rest_are_spawned(tmp_path, capfd):
    report = tmp_path / "report.json"
    specs = {"a.test.lua": {"tests": [{"name": "stuck", "sleep": 60}]},
             "b.test.lua": {"tests": [{"name": "t"}], "report": str(report)}}
    d, _ = _dispatcher(tmp_path, slots=1)

    def kill_zygote() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            z = d.zygote
            if z is not None and z.proc is not None and d._running:
                r = next(iter(d._running.values()))
                if isinstance(r.proc, ForkedProc):
                    os.kill(z.proc.pid, signal.SIGKILL)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=kill_zygote)
    t.start()
    t0 = time.monotonic()
    a, b = d.run(_files(tmp_path, specs))
    t.join()
    assert time.monotonic() - t0 < 30
    assert a.crashed and "the runner zygote died" in a.chunk_error and "SIGKILL" in a.chunk_error
    assert b.passed  # spawned, after the zygote was gone
    assert json.loads(report.read_text())["ppid"] == os.getpid()
    assert "the runner zygote died" in capfd.readouterr().err


def test_a_killed_dispatcher_takes_the_zygote_and_its_runners_along(tmp_path):
    """SIGKILL the process that runs the dispatcher: the zygote dies with it (its
    parent-death signal), and the forked runner dies with the zygote (its own)."""
    report = tmp_path / "report.json"
    spec = tmp_path / "t" / "a.test.lua"
    write(spec, json.dumps({"tests": [{"name": "t"}], "report": str(report), "hang": 60}))
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{HERE!r}, {os.path.dirname(HERE)!r}]
        from test_zygote import _dispatcher
        from provium.scheduler import discovery
        from pathlib import Path
        d, _ = _dispatcher(Path({str(tmp_path)!r}))
        d.run([discovery.Discovered(path={str(spec)!r}, root={str(spec.parent)!r}, rel="a.test.lua")])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=zygote_env())
    try:
        deadline = time.monotonic() + 60
        while not (report.exists() and report.read_text()):
            assert time.monotonic() < deadline, "the runner never started"
            assert proc.poll() is None
            time.sleep(0.05)
        runner = json.loads(report.read_text())
        zygote = runner["ppid"]
        assert zygote != proc.pid
        proc.kill()
        proc.wait()
        for pid in (zygote, runner["pid"]):
            assert gone(pid), f"process {pid} outlived the killed dispatcher"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_cli_starts_the_zygote_early_only_for_what_looks_like_a_run():
    from provium.cli import commands, main

    assert set(commands.SUBCOMMANDS) <= main.NOT_A_RUN  # a new subcommand must be listed there
    assert main._looks_like_a_run(["--vmm", "local", "tests/"])
    assert main._looks_like_a_run([])
    for args in (["list"], ["--config", "x.toml", "prepare"], ["--help"], ["-V"], ["--no-zygote", "t"],
                 ["--executor", "ray", "t"], ["--executor=ray"]):
        assert not main._looks_like_a_run(args), args

"""Nothing of a `provium` run outlives it by more than the next run's start, even after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from provium import runfiles

LOCAL = ["--vmm", "local", "--no-progress"]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_sweep_removes_only_entries_whose_owner_is_gone(tmp_path):
    live = subprocess.Popen(["sleep", "30"])
    try:
        dead = _dead_pid()
        (tmp_path / f"provium-run-{dead}-abc").mkdir()
        (tmp_path / f"provium-run-{dead}-abc" / "0.log").write_text("x")
        (tmp_path / f"provium-coverage-{dead}.msgpack").write_bytes(b"")
        (tmp_path / f"provium-run-{live.pid}-def").mkdir()  # a concurrent run: kept
        (tmp_path / f"provium-run-{os.getpid()}-ghi").mkdir()  # our own: kept
        (tmp_path / "provium-run-xyz").mkdir()  # no pid: not ours to judge
        (tmp_path / "unrelated-123-x").mkdir()
        removed = runfiles.sweep_stale(tmp_path)
        assert sorted(Path(p).name for p in removed) == sorted(
            [f"provium-run-{dead}-abc", f"provium-coverage-{dead}.msgpack"])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"provium-run-{live.pid}-def", f"provium-run-{os.getpid()}-ghi", "provium-run-xyz", "unrelated-123-x"])
    finally:
        live.kill()
        live.wait()


def test_the_next_run_sweeps_the_work_dir_of_a_sigkilled_provium(tmp_path):
    (tmp_path / "spin.test.lua").write_text(
        'test("spins", function(t) local t0 = os.time() while os.time() - t0 < 60 do end end)\n')
    (tmp_path / "ok.test.lua").write_text('test("ok", function(t) t:assert(true) end)\n')
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PROVIUM_RERUN_STATE=str(tmp_path / "rr.json"))
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", *LOCAL, "spin.test.lua"], cwd=tmp_path,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp.glob("provium-run-*/0.log")):
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left = list(tmp.glob("provium-run-*"))
    assert left and left[0].name.startswith(f"provium-run-{p.pid}-")  # SIGKILL left it behind
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", *LOCAL, "ok.test.lua"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp.iterdir()) == []

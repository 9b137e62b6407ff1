"""`--executor ray` with real guests: the same suite gives the same results and
the same events as a local run.

What only a real VM shows here: the runner a Ray worker starts boots QEMU with the
node's images and tools, from Ray's copy of the project, and its VM events and
guest output come back as a local run reports them.  One VM boot per run (two in
all); Ray is the throwaway local instance `--executor ray` starts without an
address (bound to 127.0.0.1) and stops after the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from provium.events import types as ev  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.qemu]

SRC = str(Path(__file__).resolve().parents[2] / "src")

SUITE = {
    "guest.test.lua": """
        local vm = provium:vm("v", "linux", {memory = "256M"})
        vm:boot()
        test("runs in the guest", function(t)
          t:assert_eq(vm:run("uname -s").stdout, "Linux\\n")
        end)
        test("file round trip", function(t)
          vm:write_file("/tmp/x", "hello")
          t:assert_eq(vm:read_file("/tmp/x"), "hello")
        end)
        test("fails on purpose", function(t)
          t:assert_eq(vm:run("echo a").stdout, "b\\n")
        end)
        test("skipped", function(t) t:skip("not here") end)
    """,
    "pure.test.lua": """
        test("no guest", function(t) t:assert_eq(2 * 21, 42) end)
    """,
}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PROVIUM_RERUN_STATE=str(cwd / "rerun.json"))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "provium.cli.main", "--no-progress", "--psi-threshold", "0",
                           "--json", *args, "."], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def results(out: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
        r.pop("duration_ns", None)
        for t in r["tests"]:
            t.pop("duration_ns", None)
    return {r["path"]: r for r in rows}


def sequence(path: Path) -> dict[str, list[tuple]]:
    """Each file's events in order, without timings and pool bookkeeping.  VM events
    name the lab, not the file; only guest.test.lua boots, so they are its."""
    with open(path, "rb") as f:
        frames = list(ev.iter_events(f))
    out: dict[str, list[tuple]] = {}
    for fr in frames:
        p = fr.payload
        if fr.kind == "vm_spawned":
            out.setdefault("guest.test.lua", []).append((fr.kind, p.vm_name, p.profile, p.memory_bytes))
        elif fr.kind == "vm_shutdown":
            out.setdefault("guest.test.lua", []).append((fr.kind, p.vm_name))
        elif fr.kind not in ("pool_state", "file_blocked") and getattr(p, "path", None):
            out.setdefault(p.path, []).append((fr.kind, getattr(p, "name", None), getattr(p, "status", None),
                                               getattr(p, "reason", None)))
    return out


def test_real_guest_suite_on_ray_matches_a_local_run(tmp_path):
    for rel, body in SUITE.items():
        (tmp_path / rel).write_text(textwrap.dedent(body))
    t0 = time.monotonic()
    local = run(tmp_path, "--save-events", "local.ev")
    t1 = time.monotonic()
    remote = run(tmp_path, "--executor", "ray", "--save-events", "ray.ev")
    t2 = time.monotonic()
    assert local.returncode == 1, local.stdout + local.stderr  # one test fails on purpose
    assert remote.returncode == 1, remote.stdout + remote.stderr
    assert results(remote.stdout) == results(local.stdout)
    guest = results(remote.stdout)["guest.test.lua"]
    assert [t["status"] for t in guest["tests"]] == ["passed", "passed", "failed", "skipped"]
    seq_local, seq_ray = sequence(tmp_path / "local.ev"), sequence(tmp_path / "ray.ev")
    assert seq_ray == seq_local
    assert ("vm_spawned", "v", "linux", 256 << 20) in seq_ray["guest.test.lua"]
    node_line = next(line for line in remote.stderr.splitlines() if line.startswith("provium: ray:"))
    assert "@127.0.0.1 ran 2 file(s)" in node_line
    print(f"local run {t1 - t0:.1f}s, ray run (with its local instance) {t2 - t1:.1f}s")


def qemus_of(runner_pid: int) -> list:
    """QEMU processes the runner `runner_pid` started (their scratch dir carries its pid)."""
    import psutil

    mark = f"provium-qemu-{runner_pid}/"
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if (p.info["name"] or "").startswith("qemu-system") and any(mark in a for a in p.info["cmdline"] or ()):
            found.append(p)
    return found


def test_ctrl_c_cancels_the_remote_file_and_leaves_no_qemu(tmp_path):
    import signal

    import psutil

    body = """
        local f = io.open("/proc/self/stat"); local pid = f:read("l"):match("^(%d+)"); f:close()
        local vm = provium:vm("v", "linux", {memory = "256M"})
        vm:boot()
        test("holds its guest", function(t)
          local g = io.open("{dir}/runner.pid", "w"); g:write(pid); g:close()
          vm:run("sleep 300")
        end)
    """
    (tmp_path / "hold.test.lua").write_text(textwrap.dedent(body).replace("{dir}", str(tmp_path)))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "provium.cli.main", "--no-progress", "--psi-threshold", "0",
                             "--executor", "ray", "--json", "."], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        pid_file = tmp_path / "runner.pid"
        while not (pid_file.exists() and pid_file.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the guest never booted on Ray"
            time.sleep(0.2)
        runner = int(pid_file.read_text())
        assert qemus_of(runner), "the runner's QEMU was not found (the check would prove nothing)"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, out + err
    # The remote task was cancelled: its runner and the runner's QEMU are gone (not reparented and left).
    deadline = time.monotonic() + 30
    while (psutil.pid_exists(runner) or qemus_of(runner)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not qemus_of(runner), "a QEMU outlived Ctrl-C"
    assert not psutil.pid_exists(runner) or psutil.Process(runner).status() == psutil.STATUS_ZOMBIE

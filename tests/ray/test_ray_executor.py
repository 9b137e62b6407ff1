"""`--executor ray`: the same suite on a Ray cluster, through the real CLI.

One two-node cluster (`ray.cluster_utils.Cluster`, both nodes on 127.0.0.1) serves
the whole module; one more test uses a throwaway local instance (no address).
Files run on `--vmm local` (fast): what is under test is the executor, not the VMM.
Everything a test starts is stopped by its handle (`cluster.shutdown()`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from provium.events import types as ev  # noqa: E402

pytestmark = pytest.mark.ray

SRC = str(Path(__file__).resolve().parents[2] / "src")

SUITE = {
    "a.test.lua": """
        local vm = provium:vm("a", "linux")
        vm:boot()
        test("echo", function(t) t:assert_eq(vm:run("echo a").stdout, "a\\n") end)
        test("fails", function(t) t:assert_eq(1, 2) end)
        test("skipped", function(t) t:skip("not today") end)
    """,
    "b.test.lua": """
        local vm = provium:vm("b", "linux")
        vm:boot()
        test("sleeps a little", function(t) vm:run("sleep 0.3"):assert_ok() end)
    """,
    "sub/c.test.lua": """
        test("pure lua", function(t) t:assert(1 + 1 == 2) end)
        test("also", function(t) t:assert_eq("x", "x") end)
    """,
    "sub/d.test.lua": """
        local vm = provium:vm("d", "linux")
        vm:boot()
        test("file on the node", function(t)
          vm:run("echo hi > d.out"):assert_ok()
          t:assert_eq(vm:run("cat d.out").stdout, "hi\\n")
        end)
    """,
}


def write_suite(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))


def provium(cwd: Path, *args: str, address: str | None = None, timeout: float = 180,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "provium.cli.main", "--vmm", "local", "--no-progress", "--no-preflight"]
    if address is not None:
        cmd += ["--executor", "ray", "--ray-address", address]
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_events(path: Path) -> list[ev.EventFrame]:
    with open(path, "rb") as f:
        return list(ev.iter_events(f))


def per_file(frames: list[ev.EventFrame]) -> dict[str, list[tuple]]:
    """Each file's events in order, without what legitimately differs (timings, pool, queueing)."""
    seq: dict[str, list[tuple]] = defaultdict(list)
    for f in frames:
        if f.kind in ("pool_state", "file_blocked"):
            continue
        p = f.payload
        path = getattr(p, "path", None)
        if path is None:
            continue
        seq[path].append((f.kind, getattr(p, "name", None), getattr(p, "status", None)))
    return dict(seq)


def json_results(out: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
        r.pop("duration_ns", None)
        for t in r["tests"]:
            t.pop("duration_ns", None)
    return {r["path"]: r for r in rows}


def nodes_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("provium: ray:")), "")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                      "resources": {"nodeA": 1}, "include_dashboard": False})
    worker = c.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"nodeB": 1})
    c.wait_for_nodes()
    c.worker = worker  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.shutdown()


def test_same_results_and_events_as_local_and_files_on_both_nodes(cluster, tmp_path):
    write_suite(tmp_path, SUITE)
    local = provium(tmp_path, "--json", "--save-events", "local.ev", ".")
    remote = provium(tmp_path, "--json", "--save-events", "ray.ev", ".", address=cluster.address)
    assert local.returncode == 1, local.stderr  # one test fails on purpose
    assert remote.returncode == local.returncode, remote.stderr
    assert json_results(remote.stdout) == json_results(local.stdout)
    assert per_file(read_events(tmp_path / "ray.ev")) == per_file(read_events(tmp_path / "local.ev"))
    # Four 1-CPU files on two 1-CPU nodes: both nodes ran some.
    line = nodes_line(remote.stderr)
    assert line.count("ran ") == 2, remote.stderr
    assert "@127.0.0.1" in line
    # The events name the node that ran each file; a local run's frames leave `node` off the wire.
    ray_nodes: dict[str, set[str]] = {}
    for f in read_events(tmp_path / "ray.ev"):
        if f.kind in ("file_dispatched", "file_completed"):
            assert f.payload.node.endswith("@127.0.0.1"), f
            ray_nodes.setdefault(f.payload.path, set()).add(f.payload.node)
    assert len(set().union(*ray_nodes.values())) == 2
    assert all(len(nodes) == 1 for nodes in ray_nodes.values())  # dispatched and completed agree
    for f in read_events(tmp_path / "local.ev"):
        if f.kind in ("file_dispatched", "file_completed"):
            assert "node" not in f.to_wire()["payload"]


def test_barrier_spans_two_nodes(cluster, tmp_path):
    body = """
        test("meet", function(t)
          local f = io.open("{dir}/{name}.node", "w")
          f:write(os.getenv("PROVIUM_RAY_NODE") or ""); f:close()
          local ok, why = provium:barrier("both", 2, 60)
          t:assert(ok, why)
        end)
    """
    # The files run in Ray's copy of the project: they write into the test's own dir by its full path.
    body = body.replace("{dir}", str(tmp_path))
    write_suite(tmp_path, {"x.test.lua": body.replace("{name}", "x"), "y.test.lua": body.replace("{name}", "y")})
    r = provium(tmp_path, "--json", ".", address=cluster.address)
    assert r.returncode == 0, r.stdout + r.stderr
    # With one CPU per node, two files met at the barrier only if they ran at once on two nodes.
    nx, ny = (tmp_path / "x.node").read_text(), (tmp_path / "y.node").read_text()
    assert nx and ny and nx != ny


def test_unmeetable_barrier_is_answered_at_once(cluster, tmp_path):
    write_suite(tmp_path, {"lone.test.lua": """
        test("alone", function(t)
          local ok, why = provium:barrier("pair", 2, 60)
          t:assert(not ok)
          t:assert(why:find("can never be met", 1, true), why)
        end)
    """})
    t0 = time.monotonic()
    r = provium(tmp_path, "--json", ".", address=cluster.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 50


def test_killed_node_fails_its_file_cleanly(cluster, tmp_path):
    # Each file says where it runs, then waits for the test to let it go.
    body = """
        test("wait", function(t)
          local f = io.open("{dir}/{name}.node", "w"); f:write(os.getenv("PROVIUM_RAY_NODE")); f:close()
          while true do
            local g = io.open("{dir}/release", "r")
            if g then g:close(); break end
            os.execute("sleep 0.1")
          end
        end)
    """
    body = body.replace("{dir}", str(tmp_path))
    write_suite(tmp_path, {"p.test.lua": body.replace("{name}", "p"), "q.test.lua": body.replace("{name}", "q")})
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "provium.cli.main", "--vmm", "local", "--no-progress",
                             "--no-preflight", "--executor", "ray", "--ray-address", cluster.address, "--json", "."],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ((tmp_path / "p.node").exists() and (tmp_path / "q.node").exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the files never started on both nodes"
            time.sleep(0.2)
        time.sleep(0.3)
        worker_id = cluster.worker.node_id[:12]
        on_worker = next(n for n in "pq" if (tmp_path / f"{n}.node").read_text().startswith(worker_id))
        cluster.remove_node(cluster.worker)
        time.sleep(1.0)
        (tmp_path / "release").write_text("")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cluster.worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"nodeB": 1})
    results = json_results(out)
    lost = results[f"{on_worker}.test.lua"]
    other = results[f"{'q' if on_worker == 'p' else 'p'}.test.lua"]
    assert other["passed"], err
    assert not lost["passed"]
    assert worker_id in lost["chunk_error"] and "died" in lost["chunk_error"], lost
    assert proc.returncode == 1


def test_local_instance_without_address(tmp_path):
    """No --ray-address and no RAY_ADDRESS: a local instance for the run, stopped after it."""
    write_suite(tmp_path, {"sub/c.test.lua": SUITE["sub/c.test.lua"]})
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--vmm", "local", "--no-progress",
                        "--no-preflight", "--executor", "ray", "--json", "."],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    rows = json_results(r.stdout)
    assert rows["sub/c.test.lua"]["passed"]
    assert "@127.0.0.1" in nodes_line(r.stderr)


def test_ray_address_needs_ray_executor(tmp_path):
    write_suite(tmp_path, {"c.test.lua": SUITE["sub/c.test.lua"]})
    r = provium(tmp_path, "--ray-address", "127.0.0.1:1", ".")
    assert r.returncode != 0
    assert "--ray-address only applies with --executor ray" in r.stderr

"""Where Ray puts files: each file's task asks for its whole pool charge, and
fixtures are built once per node (or once for all nodes on a shared cache).

One two-node cluster for the module (`ray.cluster_utils.Cluster`, both nodes on
127.0.0.1), sized so that memory decides placement: 4 CPUs and 1.5 GiB of Ray
`memory` per node.  A file that declares two default VMs is charged
50 MiB + 2 x (512 + 100) MiB = 1274 MiB, so two of them never share a node.
Each node gets its own fixture cache through its environment, as two machines
would have each its own ~/.cache.  Nothing here boots a guest: the placement
files declare VMs on `--vmm qemu` without booting them, the fixture files run
on `--vmm local`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from provium.events import types as ev  # noqa: E402

pytestmark = pytest.mark.ray

SRC = str(Path(__file__).resolve().parents[2] / "src")
GIB = 1 << 30


def write_suite(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))


def provium(cwd: Path, address: str, *args: str, vmm: str = "local", timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    env.pop("PROVIUM_FIXTURE_CACHE", None)  # each node's own setting applies
    cmd = [sys.executable, "-m", "provium.cli.main", "--vmm", vmm, "--no-progress", "--no-preflight",
           "--executor", "ray", "--ray-address", address, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_events(path: Path) -> list[ev.EventFrame]:
    with open(path, "rb") as f:
        return list(ev.iter_events(f))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    caches = tmp_path_factory.mktemp("node-caches")
    common = {"num_cpus": 4, "memory": int(1.5 * GIB), "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={
        **common, "resources": {"nodeA": 1}, "include_dashboard": False,
        "env_vars": {"PROVIUM_FIXTURE_CACHE": str(caches / "A")}})
    c.add_node(**common, resources={"nodeB": 1}, env_vars={"PROVIUM_FIXTURE_CACHE": str(caches / "B")})
    c.wait_for_nodes()
    c.caches = caches  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.shutdown()


# A file that says where it runs, then waits at a barrier for its partner: with the
# barrier both files hold their charge at once, so they ran on one node only if it
# had room for both.
MEET = """
    {decl}
    local f = io.open("{dir}/{name}.node", "w"); f:write(os.getenv("PROVIUM_RAY_NODE")); f:close()
    test("meet", function(t)
      local ok, why = provium:barrier("pair", 2, 90)
      t:assert(ok, why)
    end)
"""


def meet_files(tmp_path: Path, decl: str) -> dict[str, str]:
    body = MEET.replace("{dir}", str(tmp_path)).replace("{decl}", decl)
    return {f"{n}.test.lua": body.replace("{name}", n) for n in ("x", "y")}


def test_files_with_two_vms_each_never_share_a_node_that_has_room_for_one(cluster, tmp_path):
    two_vms = 'local a = provium:vm("a", "linux")\n    local b = provium:vm("b", "linux")'
    write_suite(tmp_path, meet_files(tmp_path, two_vms))
    r = provium(tmp_path, cluster.address, "--json", ".", vmm="qemu")
    assert r.returncode == 0, r.stdout + r.stderr
    nx, ny = (tmp_path / "x.node").read_text(), (tmp_path / "y.node").read_text()
    assert nx and ny and nx != ny  # 2 x 1274 MiB does not fit in one node's 1.5 GiB


def test_a_file_no_node_can_hold_fails_at_once_with_the_reason(cluster, tmp_path):
    write_suite(tmp_path, {
        "huge.test.lua": """
            local a = provium:vm("a", "linux", {memory = "1G"})
            local b = provium:vm("b", "linux")
            test("never", function(t) end)
        """,
        "small.test.lua": 'test("runs", function(t) end)',
    })
    r = provium(tmp_path, cluster.address, "--json", ".", vmm="qemu", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {row["path"]: row for row in map(json.loads, r.stdout.splitlines())}
    huge = rows["huge.test.lua"]
    assert not huge["passed"]
    err = huge["chunk_error"]
    assert "no node of the Ray cluster can run this file" in err, err
    assert "2 declared VM(s) (`a`, `b`)" in err and "1.5 GiB / 4 cpus" in err, err
    assert "provium:claim" in err
    assert rows["small.test.lua"]["passed"]


FIXTURE = """
local vm = provium:vm("base", "linux"):boot()
vm:run("sleep 2")  -- long enough for the other node's file to find the lock held
return vm:snapshot()
"""

# Both files claim 1 GiB (on --vmm local the claim is what is charged beyond the
# overhead), so they run on different nodes; the barrier makes them ask for the
# fixture at the same moment.
USER = """
provium:claim{memory = "1G"}
local f = io.open("{dir}/{name}.node", "w"); f:write(os.getenv("PROVIUM_RAY_NODE")); f:close()
local ok, why = provium:barrier("together", 2, 90)
assert(ok, why)
local vm = provium:vm_fixture("fixtures/base")
test("uses the fixture", function(t)
  t:assert(vm:run("true"):ok())
end)
"""


def fixture_suite(tmp_path: Path, shared: Path | None) -> None:
    user = USER.replace("{dir}", str(tmp_path))
    files = {"fixtures/base.fixture.lua": FIXTURE, "a.test.lua": user.replace("{name}", "a"),
             "b.test.lua": user.replace("{name}", "b")}
    if shared is not None:
        files["provium.toml"] = f'[provium]\ncache_dir = "{shared}"\n'
    write_suite(tmp_path, files)


def fixture_events(path: Path) -> list[ev.EventFrame]:
    """The fixture events (they name the fixture, not the file that asked for it)."""
    return [f for f in read_events(path) if f.kind.startswith("fixture_")]


def counts(frames: list[ev.EventFrame]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in frames:
        out[f.kind] = out.get(f.kind, 0) + 1
    return out


def entries(d: Path) -> set[str]:
    return {p.name for p in d.glob("*.snap")} if d.is_dir() else set()


def test_fixture_is_built_once_per_node_with_the_same_key(cluster, tmp_path):
    fixture_suite(tmp_path, shared=None)
    r = provium(tmp_path, cluster.address, "--json", "--save-events", "ev", ".")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "a.node").read_text() != (tmp_path / "b.node").read_text()
    # Each node has its own cache: the fixture was built once on each node (no file waited
    # for the other: they do not share a lock), then each file restored it.
    assert counts(fixture_events(tmp_path / "ev")) == {
        "fixture_build_started": 2, "fixture_build_done": 2, "fixture_cache_hit": 2}
    a, b = entries(cluster.caches / "A"), entries(cluster.caches / "B")
    assert len(a) == 1 and a == b  # one entry per node, under the same key
    # A second run on the same nodes hits on both.
    r = provium(tmp_path, cluster.address, "--json", "--save-events", "ev2", ".")
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(fixture_events(tmp_path / "ev2")) == {"fixture_cache_hit": 2}


def test_fixture_on_a_shared_cache_is_built_once_for_the_cluster(cluster, tmp_path):
    shared = tmp_path / "shared-cache"
    fixture_suite(tmp_path, shared=shared)
    r = provium(tmp_path, cluster.address, "--json", "--save-events", "ev", ".")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "a.node").read_text() != (tmp_path / "b.node").read_text()
    frames = fixture_events(tmp_path / "ev")
    # Built once for the cluster: the other node's file found the cross-process build
    # lock held (it names the builder), waited, then hit like the builder did.
    assert counts(frames) == {"fixture_build_started": 1, "fixture_build_waiting": 1,
                              "fixture_build_done": 2, "fixture_cache_hit": 2}, frames
    waiting = next(f.payload for f in frames if f.kind == "fixture_build_waiting")
    assert os.path.basename(waiting.held_by_file) in ("a.test.lua", "b.test.lua"), waiting
    assert len(entries(shared)) == 1


def test_nodes_read_their_own_copy_of_provium_toml(tmp_path, monkeypatch):
    """The driver's absolute config path exists only on its machine; nodes get it
    relative to the project, resolved in their copy of it (their cwd)."""
    from provium.runner.settings import RunSettings
    from provium.scheduler.ray_executor import settings_for_nodes, settings_on_node

    (tmp_path / "proj").mkdir()
    inside = RunSettings(config_path=str(tmp_path / "proj" / "provium.toml")).to_json()
    shipped = settings_for_nodes(inside, str(tmp_path / "proj"))
    assert json.loads(shipped)["config_path"] == "provium.toml"
    copy = tmp_path / "ray-copy"
    copy.mkdir()
    monkeypatch.chdir(copy)
    assert json.loads(settings_on_node(shipped))["config_path"] == str(copy / "provium.toml")
    # A config outside the project is not shipped: its path is kept as given.
    outside = RunSettings(config_path="/etc/provium.toml").to_json()
    assert json.loads(settings_on_node(settings_for_nodes(outside, str(tmp_path / "proj"))))["config_path"] == \
        "/etc/provium.toml"


def test_kvm_files_ask_for_kvm_and_are_refused_where_no_node_offers_it(tmp_path):
    from provium.config import Profile
    from provium.scheduler.charge import ChargeRules, file_charge
    from provium.scheduler.pool import size_pool
    from provium.scheduler.ray_executor import RayExecutor

    f = tmp_path / "k.test.lua"
    f.write_text('local vm = provium:vm("fast", "quick")\n')
    rules = ChargeRules(pool=size_pool(vmm="qemu", memory=GIB * 8, cpus=4),
                        profiles={"quick": Profile(name="quick", accel="kvm")})
    charge = file_charge(str(f), rules)
    assert RayExecutor.task_options(charge) == {"memory": (50 + 612) << 20, "num_cpus": 1, "resources": {"kvm": 1}}
    plain = {"memory": 4.0 * GIB, "CPU": 4.0}
    why = RayExecutor.refusal(charge, [("n1@127.0.0.1", plain)])
    assert why is not None and "0 node(s) offer the `kvm` resource" in why, why
    assert RayExecutor.refusal(charge, [("n1@127.0.0.1", plain), ("n2@127.0.0.1", {**plain, "kvm": 2.0})]) is None

"""The Ray executor's cost per test file, against the local scheduler, in one run.

    .venv/bin/python bench/cluster.py [--files N] [--write-readme]

A suite of small `--vmm local` files (one VM each: the local agent) runs four
times through the `provium` CLI: N and 2N files with the local scheduler, and
N and 2N files with `--executor ray` against a one-node Ray cluster started once
by this script on 127.0.0.1 (`ray.cluster_utils.Cluster`, 2 CPUs).  The cost of
one more file is (T(2N) - T(N)) / N for each executor, so Ray's start-up and the
CLI's own start cancel out; the ratio ray / local is the executor's overhead.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from readme import write_section  # noqa: E402

FILE = """
local vm = provium:vm("v", "linux")
vm:boot()
test("work", function(t)
  t:assert_eq(vm:run("echo {i}").stdout, "{i}\\n")
end)
"""


def make_suite(dir: Path, n: int) -> Path:
    suite = dir / f"suite{n}"
    suite.mkdir()
    for i in range(n):
        (suite / f"f{i:03d}.test.lua").write_text(FILE.replace("{i}", str(i)))
    return suite


def run(suite: Path, extra: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PROVIUM_DURATIONS=str(suite.parent / "durations.json"),
               PROVIUM_RERUN_STATE=str(suite.parent / "rerun.json"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--vmm", "local", "--no-progress",
                        "--no-preflight", *extra, "."], cwd=suite, env=env, capture_output=True, text=True,
                       timeout=1800)
    took = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench/cluster.py: the suite failed ({' '.join(extra) or 'local'}):\n{r.stdout}{r.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep the driver on 127.0.0.1
    # The cluster's workers inherit this environment: they must import this checkout's provium.
    os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    from ray.cluster_utils import Cluster

    n = args.files
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="provium-bench-cluster-") as tmp:
        small, big = make_suite(Path(tmp), n), make_suite(Path(tmp), 2 * n)
        t_start = time.monotonic()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        ray_up = time.monotonic() - t_start
        try:
            ray_flags = ["--executor", "ray", "--ray-address", cluster.address]
            local_n, local_2n = run(small, []), run(big, [])
            ray_n, ray_2n = run(small, ray_flags), run(big, ray_flags)
        finally:
            cluster.shutdown()
    per_local = (local_2n - local_n) / n
    per_ray = (ray_2n - ray_n) / n
    load_after = os.getloadavg()
    rows = [
        ("local scheduler", local_n, local_2n, per_local),
        ("--executor ray (1 node)", ray_n, ray_2n, per_ray),
    ]
    lines = [
        "## cluster",
        "",
        f"`bench/cluster.py --files {n}` — {datetime.date.today()}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(a shared machine: other engineers' VMs and tests were running; the ratio within this one run is what "
        "counts).",
        "",
        f"{n} and {2 * n} `--vmm local` files (one local VM and one command each), whole CLI runs; "
        "the cost of one more file is (T(2N) - T(N)) / N, so start-up cancels out. "
        f"Starting the one-node Ray cluster itself took {ray_up:.1f} s (not in the figures below; a local "
        "instance started by `--executor ray` without an address costs about that once per run).",
        "",
        f"| executor | {n} files | {2 * n} files | per extra file |",
        "|---|---|---|---|",
    ]
    for name, a, b, per in rows:
        lines.append(f"| {name} | {a:.2f} s | {b:.2f} s | {per * 1000:.0f} ms |")
    ratio = per_ray / per_local if per_local > 0 else float("inf")
    lines += ["", f"Ray executor overhead: **{ratio:.2f}x** the local scheduler's cost per file "
                  f"({(per_ray - per_local) * 1000:+.0f} ms per file)."]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write_readme:
        write_section("cluster", section)


if __name__ == "__main__":
    main()

"""The Ray executor's cost per test file, against the local scheduler, in one run.

    .venv/bin/python bench/cluster.py [--files N] [--write-readme]

A suite of small `--vmm local` files (one VM each: the local agent) runs four
times through the `provium` CLI: N and 2N files with the local scheduler, and
N and 2N files with `--executor ray` against a one-node Ray cluster started once
by this script on 127.0.0.1 (`ray.cluster_utils.Cluster`, 2 CPUs).  The cost of
one more file is (T(2N) - T(N)) / N for each executor, so Ray's start-up and the
CLI's own start cancel out; the ratio ray / local is the executor's overhead.

On a shared, loaded machine one run of each is noise (a first run gave 0.69x), so
the four runs are repeated `--repeat` times, interleaved (local and ray side by
side, so load drifts hit both); each repeat gives a per-file cost, and the
medians of those are compared (every repeat's figure is shown).
Also timed: what the driver adds per file before submitting it, reading the
file's charge from its source (scheduler/charge.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
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


def time_charges(suite: Path) -> float:
    """Microseconds per file to compute its charge, as the driver does before submitting."""
    from provium.config import builtin_linux_profile
    from provium.scheduler.charge import ChargeRules, file_charge
    from provium.scheduler.pool import size_pool

    rules = ChargeRules(pool=size_pool(vmm="qemu"), profiles={"linux": builtin_linux_profile()},
                        roots=(str(suite),))
    files = sorted(str(p) for p in suite.glob("*.test.lua"))
    rounds = 50
    t0 = time.perf_counter()
    for _ in range(rounds):
        for f in files:
            file_charge(f, rules)
    return (time.perf_counter() - t0) / (rounds * len(files)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep the driver on 127.0.0.1
    # The cluster's workers inherit this environment: they must import this checkout's provium.
    os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    from ray.cluster_utils import Cluster

    n = args.files
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"local_n": [], "local_2n": [], "ray_n": [], "ray_2n": []}
    with tempfile.TemporaryDirectory(prefix="provium-bench-cluster-") as tmp:
        small, big = make_suite(Path(tmp), n), make_suite(Path(tmp), 2 * n)
        charge_us = time_charges(big)
        t_start = time.monotonic()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        ray_up = time.monotonic() - t_start
        try:
            ray_flags = ["--executor", "ray", "--ray-address", cluster.address]
            for _ in range(args.repeat):
                times["local_n"].append(run(small, []))
                times["ray_n"].append(run(small, ray_flags))
                times["local_2n"].append(run(big, []))
                times["ray_2n"].append(run(big, ray_flags))
        finally:
            cluster.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    # Per repeat, T(N) and T(2N) ran minutes apart at most: their difference is the
    # paired figure; the median of those is less swayed by one run caught in a load spike.
    per_each = {k: [(b - a) / n for a, b in zip(times[f"{k}_n"], times[f"{k}_2n"])] for k in ("local", "ray")}
    per_local = statistics.median(per_each["local"])
    per_ray = statistics.median(per_each["ray"])
    load_after = os.getloadavg()
    rows = [
        ("local scheduler", "local", per_local),
        ("--executor ray (1 node)", "ray", per_ray),
    ]
    lines = [
        "## cluster",
        "",
        f"`bench/cluster.py --files {n} --repeat {args.repeat}` — {datetime.date.today()}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after (a shared, loaded machine: other engineers' VMs and test suites were running; "
        "the ratio within this one run is what counts, and single runs swing by seconds).",
        "",
        f"{n} and {2 * n} `--vmm local` files (one local VM and one command each), whole CLI runs, each "
        f"repeated {args.repeat} times interleaved (run times: medians). The cost of one more file is "
        "(T(2N) - T(N)) / N per repeat, so start-up cancels out; its median over the repeats is compared. "
        f"Starting the one-node Ray cluster itself took {ray_up:.1f} s (not in the figures below; a local "
        "instance started by `--executor ray` without an address costs about that once per run).",
        "",
        f"| executor | {n} files | {2 * n} files | per extra file (median) | per extra file, each repeat |",
        "|---|---|---|---|---|",
    ]
    for name, key, per in rows:
        each = ", ".join(f"{x * 1000:.0f}" for x in per_each[key])
        lines.append(f"| {name} | {med[key + '_n']:.2f} s | {med[key + '_2n']:.2f} s | {per * 1000:.0f} ms "
                     f"| {each} ms |")
    ratio = per_ray / per_local if per_local > 0 else float("inf")
    lines += ["", f"Ray executor overhead: **{ratio:.2f}x** the local scheduler's cost per file "
                  f"({(per_ray - per_local) * 1000:+.0f} ms per file).",
              "", f"Reading a file's charge from its source before submitting it (claim, declared VMs, "
                  f"fixtures): {charge_us:.0f} µs per file on the driver."]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write_readme:
        write_section("cluster", section)


if __name__ == "__main__":
    main()

"""Parallel files: wall time of N identical real-VM test files, the default pool vs `--cpus 1`.

    .venv/bin/python bench/parallel.py [--files N] [--write-readme]

Each file boots the built-in `linux` guest (512 MiB, 1 vCPU), runs a few commands
in it and shuts it down.  The same suite runs twice through the `provium` CLI in
one go: with `--cpus 1` (the pool admits one VM at a time: the serial baseline),
with the default pool (as many VMs as the host has CPUs), and with the default
pool but no pressure gate (`--psi-threshold 0`): on a busy host the gate alone
holds new files back.  The speed-up is
serial / parallel; the target is at least 0.8 x the number of cores.

The host's load and CPU pressure (PSI) before each run are recorded, because on
a shared machine other people's work takes cores away from both runs (and PSI
gating then holds back new files, as it should).
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

from readme import write_section

from provium.scheduler.pool import host_cpus
from provium.scheduler.psi import read_pressure

FILE = """
local vm = provium:vm("v", "linux")
test("boot and work", function(t)
  vm:boot()
  for i = 1, 5 do
    t:assert_eq(vm:run("echo " .. i).stdout, i .. "\\n")
  end
  vm:shutdown()
end)
"""


def run_suite(suite: Path, extra: list[str]) -> tuple[float, int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PROVIUM_DURATIONS=str(suite.parent / "durations.json"),
               PROVIUM_RERUN_STATE=str(suite.parent / "rerun.json"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--no-progress", *extra, str(suite)],
                       check=False, env=env, capture_output=True, text=True, timeout=3600)
    return time.monotonic() - t0, r.returncode, r.stdout + r.stderr


def host_state() -> str:
    load = os.getloadavg()
    psi = read_pressure("/proc/pressure/cpu")
    return f"load {load[0]:.2f}, cpu PSI some avg10 {psi if psi is not None else 'n/a'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=None, help="number of files (default: 2 x cores)")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    cores = host_cpus()
    n = args.files or 2 * cores
    with tempfile.TemporaryDirectory(prefix="provium-bench-parallel-") as tmp:
        suite = Path(tmp) / "suite"
        suite.mkdir()
        for i in range(n):
            (suite / f"f{i:02d}.test.lua").write_text(FILE)
        # one unmeasured warm-up file: image caches, page cache
        warm = Path(tmp) / "warm"
        warm.mkdir()
        (warm / "w.test.lua").write_text(FILE)
        _, code, out = run_suite(warm, [])
        if code != 0:
            print(out)
            return 1
        before_serial = host_state()
        serial, c1, o1 = run_suite(suite, ["--cpus", "1"])
        before_par = host_state()
        parallel, c2, o2 = run_suite(suite, [])
        before_nopsi = host_state()
        nopsi, c3, o3 = run_suite(suite, ["--psi-threshold", "0"])
        after = host_state()
    for code, out in ((c1, o1), (c2, o2), (c3, o3)):
        if code != 0:
            print(out)
            return 1
    speedup = serial / parallel
    target = 0.8 * cores
    lines = [
        f"{n} files, each booting one 512 MiB / 1 vCPU `linux` guest (TCG) and running 5 commands:",
        "",
        "| pool | wall time | host before the run |",
        "|---|---|---|",
        f"| `--cpus 1` (one VM at a time) | {serial:.1f} s | {before_serial} |",
        f"| default ({cores} CPUs) | {parallel:.1f} s | {before_par} |",
        f"| default, `--psi-threshold 0` (no pressure gate) | {nopsi:.1f} s | {before_nopsi} |",
        "",
        (f"Speed-up **{speedup:.2f}x** with the defaults, **{serial / nopsi:.2f}x** without the pressure gate, "
         f"on {cores} cores (target >= {target:.1f}x: "
         f"{'met' if max(speedup, serial / nopsi) >= target else 'NOT met'}). After the runs: {after}."),
    ]
    print("\n".join(lines))
    if args.write_readme:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        section = "\n".join([
            "## parallel files", "",
            f"`bench/parallel.py`, {stamp}, {platform.node()} ({cores} cores, {platform.machine()}). "
            "Ratios within this one run are what count: the machine is shared, and other work on it "
            "(see the load columns) takes cores from both runs.", "", *lines, ""])
        write_section("parallel files", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

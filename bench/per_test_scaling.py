"""Per-test cost as a file grows: 1,000 / 5,000 / 10,000 trivial tests in one file.

The cost of one test must not depend on how many tests the file has (it once
did: a full Lua collection after every test walked the whole file).  The
baseline is the per-test cost in the 1,000-test file of the same run; the
ratios of the bigger files against it should stay near 1.

Runs each file in-process through `provium.runner.file_runner.run_file` with
`--vmm local` settings, so interpreter start-up is not counted.  Reports the
CPU time of this process (less sensitive than wall time on a shared machine).

Usage: .venv/bin/python bench/per_test_scaling.py [--write-readme]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from readme import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)

from provium.runner.file_runner import run_file  # noqa: E402
from provium.runner.settings import RunSettings  # noqa: E402

SIZES = (1000, 5000, 10000)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(n: int, d: str) -> float:
    p = Path(d) / f"t{n}.test.lua"
    p.write_text("".join(f'test("t{i}", function(t) t:assert(true) end)\n' for i in range(n)))
    t0 = cpu()
    out = run_file(str(p), RunSettings(vmm="local"), lambda e: None)
    spent = cpu() - t0
    assert out.chunk_error is None and len(out.tests) == n, out.chunk_error
    return spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        per = {n: one(n, d) / n for n in SIZES}
    base = per[SIZES[0]]
    rows = [f"| {n:,} | {per[n] * 1e3:.3f} ms | {per[n] / base:.2f}x |" for n in SIZES]
    for r in rows:
        print(r)
    if args.write_readme:
        write_section("per-test scaling", "\n".join([
            "## per-test scaling",
            "",
            f"`bench/per_test_scaling.py`, {datetime.date.today()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, on a loaded machine (several engineers' VMs running).",
            "CPU time per trivial test in a file of N tests (`--vmm local`, in-process); the ratio is against",
            "the 1,000-test file of the same run and should stay near 1 (the cost is linear in N).",
            "",
            "| tests in the file | CPU per test | vs 1,000 |",
            "|---|---|---|",
            *rows,
            "",
        ]))


if __name__ == "__main__":
    main()

"""Runner overhead: what one test file and one test cost with `--vmm local`.

Measured in one run, against a baseline taken in the same run:

* 100 trivial test files (one empty test each) through `provium --vmm local`:
  files per second, and the cost per file above a bare `python -c pass` spawn
  done the same number of times with the same parallelism;
* one file with 100 trivial tests: the cost per test;
* the fixed cost of a run (one file, one test) for reference.

Usage: .venv/bin/python bench/runner.py [--files N] [--tests N] [--repeat R] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import concurrent.futures as cf
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from readme import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
PROVIUM = [sys.executable, "-m", "provium.cli.main"]
FLAGS = ["--vmm", "local", "--no-preflight", "--no-progress", "-q"]


# Runs provium in a fresh interpreter and reports, from inside it, the CPU time of
# the provium process itself and of the runners it reaped: CPU time is far less
# sensitive than wall time to other work on a shared machine.
_WRAPPER = """
import json, resource, sys, time
out = sys.argv[1]
t0 = time.perf_counter()
from provium.cli.main import dispatch
code = dispatch(sys.argv[2:])
wall = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"code": code, "wall": wall, "self_cpu": me.ru_utime + me.ru_stime,
           "children_cpu": kids.ru_utime + kids.ru_stime}, open(out, "w"))
"""


def provium_run(paths: list[str], env: dict) -> dict:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _WRAPPER, out, *FLAGS, *paths], capture_output=True, text=True,
                           env=env)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"provium failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
        data = json.loads(Path(out).read_text())
    finally:
        os.unlink(out)
    if data["code"] != 0:
        sys.exit(f"provium exited {data['code']}:\n{r.stdout}\n{r.stderr}")
    data["total_wall"] = wall
    return data


def bare_spawns(n: int, parallel: int) -> float:
    """n `python -c pass` processes, `parallel` at a time, like the pool runs runners."""
    def one(_):
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=parallel) as ex:
        list(ex.map(one, range(n)))
    return time.perf_counter() - t0


def bare_runners(files: list[Path], parallel: int, work: Path) -> float:
    """The runner subprocess alone (`python -m provium.runner`), no scheduler around it."""
    settings = work / "settings.json"
    settings.write_text('{"vmm": "local"}')

    def one(i_f):
        i, f = i_f
        subprocess.run([sys.executable, "-m", "provium.runner", "--settings", str(settings),
                        "--result", str(work / f"r{i}.json"), str(f)], check=True)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=parallel) as ex:
        list(ex.map(one, enumerate(files)))
    return time.perf_counter() - t0


def slots() -> int:
    from provium.scheduler.pool import size_pool

    return size_pool(vmm="local").slots


def median(xs):
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-readme", action="store_true", help="record the results in bench/README.md")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="provium-bench-"))
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp / "rerun.json"))
    try:
        many = tmp / "many"
        many.mkdir()
        for i in range(a.files):
            (many / f"f{i:03d}.test.lua").write_text('test("t", function(t) end)\n')
        one = tmp / "one" / "wide.test.lua"
        one.parent.mkdir()
        one.write_text("".join(f'test("t{i}", function(t) t:assert(true) end)\n' for i in range(a.tests)))
        single = tmp / "single" / "one.test.lua"
        single.parent.mkdir()
        single.write_text('test("t", function(t) end)\n')

        n_slots = slots()
        provium_run([str(single)], env)  # warm the page cache and .pyc files
        fixed, files_t, wide_t, base_par, base_seq, runners = [], [], [], [], [], []
        many_files = sorted(many.glob("*.test.lua"))
        for _ in range(a.repeat):
            fixed.append(provium_run([str(single)], env))
            files_t.append(provium_run([str(many)], env))
            wide_t.append(provium_run([str(one)], env))
            base_par.append(bare_spawns(a.files, n_slots))
            base_seq.append(bare_spawns(a.files, 1))
            runners.append(bare_runners(many_files, n_slots, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(runs, key):
        return median([r[key] for r in runs])

    fx, ft, wt = (med(x, "total_wall") for x in (fixed, files_t, wide_t))
    bp, bs, rn = map(median, (base_par, base_seq, runners))
    per_file = (ft - fx) / (a.files - 1)
    spawn_par = bp / a.files
    sched_cpu = (med(files_t, "self_cpu") - med(fixed, "self_cpu")) / (a.files - 1)
    runner_cpu = (med(files_t, "children_cpu") - med(fixed, "children_cpu")) / (a.files - 1)
    test_cpu = (med(wide_t, "children_cpu") - med(fixed, "children_cpu")) / (a.tests - 1)
    rows = [
        ("run of 1 file, 1 test (wall, incl. provium start-up)", f"{fx * 1000:.0f} ms"),
        (f"{a.files} files, 1 trivial test each (wall)", f"{ft:.2f} s = {a.files / ft:.1f} files/s"),
        (f"wall cost per extra file (pool of {n_slots})", f"{per_file * 1000:.0f} ms"),
        (f"baseline: {a.files} x `python -c pass`, {n_slots} at a time", f"{bp:.2f} s = {spawn_par * 1000:.0f} ms each"),
        (f"baseline: {a.files} x `python -c pass`, one at a time", f"{bs:.2f} s = {bs / a.files * 1000:.0f} ms each"),
        ("wall per file / wall per bare spawn (same parallelism)", f"{per_file / spawn_par:.1f}x"),
        (f"the runner alone: {a.files} x `python -m provium.runner`, {n_slots} at a time",
         f"{rn:.2f} s = {rn / a.files * 1000:.0f} ms each"),
        ("CPU per extra file in the provium process (scheduler)", f"{sched_cpu * 1000:.1f} ms"),
        ("CPU per extra file in its runner subprocess", f"{runner_cpu * 1000:.0f} ms"),
        (f"1 file with {a.tests} trivial tests (wall)", f"{wt:.2f} s"),
        ("CPU per extra test (in the runner)", f"{test_cpu * 1000:.2f} ms"),
    ]
    for k, v in rows:
        print(f"{k:<58} {v}")

    if a.write_readme:
        write_readme(rows, a)


def write_readme(rows, a) -> None:
    cpu = os.cpu_count()
    os_name = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    today = datetime.date.today().isoformat()
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    section = f"""## runner

`bench/runner.py`: what the scheduler and a runner subprocess cost per test file
and per test with `--vmm local` (no VM; the guest agent runs on the host), next
to a bare `python -c pass` spawn measured in the same run.  Medians of
{a.repeat} runs; each provium run is a fresh interpreter.  Reproduce:
`.venv/bin/python bench/runner.py --write-readme`.

Machine: {cpu} cores, {os_name}, Python {platform.python_version()}; {today}.

| measurement | result |
|---|---|
{table}

Reading it: nearly all of a file's cost is its runner subprocess (a Python
interpreter importing Lua, the host model and the local agent); the scheduler
in the provium process (spawning, pipes, event forwarding, result parsing)
adds about a millisecond of CPU per file.  CPU rows are steadier than wall rows
when other work shares the machine.
Files run {'in parallel, one per core' if (cpu or 1) > 1 else 'one at a time'}.  A test inside a file costs well under a
millisecond of CPU, so many small tests in one file are cheap, while splitting
them over many files pays the start-up each time.  A pre-forked runner ("zygote")
would remove most of the start-up; not done yet.
"""
    write_section("runner", section)


if __name__ == "__main__":
    main()

"""What the pytest plugin and `import provium` cost a run that does not use them.

    .venv/bin/python bench/pytest_plugin.py [--runs N] [--write-readme]

The plugin is registered as a `pytest11` entry point, so every pytest run of an
environment with provium installed loads it; it must cost nothing noticeable.
Measured, alternating, in the same run:

1. `pytest -q` on one trivial test file without the plugin (`-p no:provium.pytest_plugin`,
   the baseline) and with it (`-p provium.pytest_plugin`);
2. `python -c "import provium"` against `python -c pass` (the CLI and the agent
   import the package first; its names are imported lazily).

Medians of wall time; the ratios are what count (the machine is shared).
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
sys.path.insert(0, str(ROOT / "bench"))

from readme import write_section  # noqa: E402


def timed(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--write-readme", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="provium-bench-plugin-") as d:
        Path(d, "test_trivial.py").write_text("def test_nothing():\n    pass\n")
        base = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
        kinds = {
            "pytest, plugin blocked": base[:3] + ["-p", "no:provium.pytest_plugin"] + base[3:],
            "pytest, plugin loaded": base[:3] + ["-p", "provium.pytest_plugin"] + base[3:],
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import provium'": [py, "-c", "import provium"],
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for argv in kinds.values():  # warm-up (page cache, bytecode)
            timed(argv, d, env)
        for _ in range(a.runs):
            for k, argv in kinds.items():
                times[k].append(timed(argv, d, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    plugin_ratio = med["pytest, plugin loaded"] / med["pytest, plugin blocked"]
    import_ratio = med["python -c 'import provium'"] / med["python -c pass"]
    rows = "\n".join(f"| {k} | {v * 1000:.0f} ms |" for k, v in med.items())
    section = f"""## pytest plugin

`bench/pytest_plugin.py`, {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores,
{a.runs} alternating runs each, median wall time; a shared, loaded machine (other engineers'
VMs and test runs), so read the ratios.

| what | median |
|---|---|
{rows}

- the plugin loaded vs blocked on a trivial pytest run: **{plugin_ratio:.2f}x**
- `import provium` vs a bare interpreter start: **{import_ratio:.2f}x**
"""
    print(section)
    if a.write_readme:
        write_section("pytest plugin", section)


if __name__ == "__main__":
    main()

"""`make demo`'s promise: the examples pass on real QEMU guests (TCG is fine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.qemu
def test_examples_pass_on_qemu(tmp_path):
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--json", "--junit", str(tmp_path / "j.xml"),
                        "examples/"], cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    objs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(objs) == 4 and all(o["passed"] for o in objs)
    statuses = [t["status"] for o in objs for t in o["tests"]]
    assert statuses.count("passed") == 16 and statuses.count("skipped") == 2
    assert "VM evidence" not in r.stderr.decode()  # a passing run keeps no artifacts


@pytest.mark.qemu
def test_the_failing_example_fails_on_qemu(tmp_path):
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--include-slow", "--no-progress",
                        "examples/04-tags.test.lua"], cwd=ROOT, env=env, capture_output=True, timeout=600)
    out = r.stdout.decode()
    assert r.returncode == 1, out + r.stderr.decode()
    assert "FAIL examples/04-tags.test.lua (2 passed, 1 failed, 1 skipped)" in out
    assert 'this guest is not Plan 9: "Linux" ~= "Plan 9"' in out
    # The failing file's VM evidence is kept, and the output says where.
    err = r.stderr.decode()
    line = next(l for l in err.splitlines() if "VM evidence" in l)
    kept = Path(line.rsplit(" kept in ", 1)[1])
    try:
        vms = list((kept / "examples__04-tags.test.lua").iterdir())
        assert vms, err
        assert (vms[0] / "console.log").stat().st_size > 0
        assert "qemu-system" in (vms[0] / "qemu.argv").read_text()
        assert (vms[0] / "qmp.log").exists()
    finally:
        shutil.rmtree(kept, ignore_errors=True)

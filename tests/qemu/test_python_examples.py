"""`examples/python/` passes on real guests, run as a user runs it: pytest with the plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qemu_util import needs_qemu

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.qemu, needs_qemu]


def test_the_python_examples_pass_on_real_guests(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "provium.pytest_plugin", "-p", "no:cacheprovider",
                        "-q", "-rA", "--provium-vmm", "qemu",
                        str(ROOT / "examples" / "python")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # The two-VM bridge test ran (was not skipped): only the example's deliberate skip is allowed.
    assert re.search(r"^PASSED .*test_two_vms_reach_each_other_until_partitioned", r.stdout, re.M), out
    assert re.findall(r"^SKIPPED .*", r.stdout, re.M) == [
        l for l in r.stdout.splitlines() if l.startswith("SKIPPED") and "shows how a skip looks" in l], out

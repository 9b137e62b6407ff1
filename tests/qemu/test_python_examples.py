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


def test_a_failing_guest_test_reports_its_console_and_keeps_its_evidence(tmp_path):
    """On a real guest the failure report carries the console's tail (kernel lines), the
    VM is shut down, and its console log, QMP log and QEMU argv are kept for the user."""
    (tmp_path / "test_inner.py").write_text(
        "def test_fails(provium_lab):\n"
        "    vm = provium_lab.vm('box', 'linux').boot()\n"
        "    assert vm.run('echo one').stdout == b'two\\n'\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "provium.pytest_plugin", "-p", "no:cacheprovider",
                        "-q", "--provium-vmm", "qemu", "test_inner.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "1 failed" in r.stdout, out
    # The section's body: after its header line, up to the next section or summary rule.
    body = re.split(r"\n[-=]{5,}", r.stdout.split("provium console: box", 1)[1].split("\n", 1)[1])[0]
    assert body.strip() and "no console output" not in body, out
    m = re.search(r"VM evidence \(console log, QMP log, QEMU argv\) kept in (\S+)", r.stdout)
    assert m, out
    kept = list(Path(m.group(1)).rglob("console.log"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0, out

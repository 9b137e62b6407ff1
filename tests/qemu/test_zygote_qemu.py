"""A runner forked from the zygote, with a real QEMU guest under it.

What only a VM shows: the chain of parent-death signals holds with a real QEMU at
its end.  SIGKILL `provium` while a forked runner's guest runs: the zygote dies
with provium, the runner with the zygote, QEMU with the runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

FILE = """
test("boots and waits", function(t)
  local vm = provium:vm("z", "linux"):boot()
  local f = io.open(os.getenv("MARK"), "w")
  f:write("up")
  f:close()
  vm:run("sleep 600")
end)
"""


def _dead(p: psutil.Process, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.qemu
def test_a_sigkilled_provium_takes_the_zygote_runner_and_qemu_along(tmp_path):
    (tmp_path / "q.test.lua").write_text(FILE)
    mark = tmp_path / "mark"
    env = dict(os.environ, MARK=str(mark), PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    env.pop("PROVIUM_NO_ZYGOTE", None)
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", "--no-progress", "--psi-threshold", "0",
                          str(tmp_path / "q.test.lua")], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not mark.exists():
            assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
            assert time.monotonic() < deadline, "the guest did not boot"
            time.sleep(0.2)
        tree = psutil.Process(p.pid).children(recursive=True)
        names = {q.pid: q.name() for q in tree}
        zygote = [q for q in tree if names[q.pid] == "provium-zygote"]
        runner = [q for q in tree if names[q.pid] == "provium-runner"]
        qemu = [q for q in tree if names[q.pid].startswith("qemu-system")]
        assert len(zygote) == 1 and len(runner) == 1 and len(qemu) == 1, names
        assert qemu[0].ppid() == runner[0].pid and runner[0].ppid() == zygote[0].pid
        p.kill()
        p.wait()
        for q, what in ((zygote[0], "zygote"), (runner[0], "runner"), (qemu[0], "QEMU")):
            assert _dead(q, 15), f"the {what} (pid {q.pid}) outlived a SIGKILLed provium"
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

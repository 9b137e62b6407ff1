"""Two real-VM files run side by side under the pool, meeting at a barrier.

What only real guests show: each VM boot is charged to the pool (memory + 100 MiB,
1 vCPU) while it runs and given back at shutdown, and two files each holding a
running VM at once get there through the dispatcher's pool and barrier.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from provium.events import types as ev

FILE = """
local vm = provium:vm("v", "linux", {memory = "256M"})
test("side by side", function(t)
  vm:boot()
  assert(provium:barrier("both-up", 2, 120))   -- the other file's VM is up too
  t:assert_eq(vm:run("echo hi").stdout, "hi\\n")
  vm:shutdown()
end)
"""


@pytest.mark.qemu
def test_two_files_with_real_vms_meet_at_a_barrier(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for n in ("a", "b"):
        (suite / f"{n}.test.lua").write_text(FILE)
    events = tmp_path / "events.msgpack"
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--no-progress", "--psi-threshold", "0",
                        "--cpus", "2", "--save-events", str(events), str(suite)],
                       env=env, capture_output=True, timeout=600)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    with open(events, "rb") as f:
        frames = list(ev.iter_events(f))
    used = [fr.payload.used for fr in frames if fr.kind == "pool_state"]
    vm_charge = 256 * (1 << 20) + 100 * (1 << 20)
    # at some second both VMs were charged at once, and everything was given back at the end
    assert any(u.cpus == 2 and u.memory_bytes >= 2 * vm_charge for u in used), used
    assert used[-1] == ev.ResourceAmount(0, 0)
    print(f"two real-VM files: {time.monotonic() - t0:.1f}s")


"""Under QEMU, a file whose tests are all filtered out starts no QEMU at all (its
top-level boots are held and dropped, lua/deferboot.py), while a file next to it
with a selected test boots as usual.  One boot in all (the control)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from provium.events import types as ev

FILTERED = """
local vm = provium:vm("idle", "linux"):boot()
test("never selected", {tags = {"other"}}, function(t) t:assert_eq(vm:state(), "booted") end)
"""
SELECTED = """
local vm = provium:vm("used", "linux"):boot()
test("selected", {tags = {"run-me"}}, function(t) t:assert_eq(vm:run("echo hi").stdout, "hi\\n") end)
"""


@pytest.mark.qemu
def test_filtered_out_file_starts_no_qemu(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "filtered.test.lua").write_text(FILTERED)
    (suite / "selected.test.lua").write_text(SELECTED)
    events = tmp_path / "events.msgpack"
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--no-progress", "--vmm", "qemu",
                        "--tag", "run-me", "--save-events", str(events), str(suite)],
                       env=env, capture_output=True, timeout=600)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    with open(events, "rb") as f:
        frames = list(ev.iter_events(f))
    spawned = [fr.payload for fr in frames if fr.kind == "vm_spawned"]
    # the control booted a real guest; the filtered file none
    assert [(os.path.basename(p.file), p.vm_name) for p in spawned] == [("selected.test.lua", "used")], spawned
    skipped = [fr.payload for fr in frames if fr.kind == "test_skipped"]
    assert [(p.name, p.reason) for p in skipped] == [("never selected", 'filtered: did not match --tag (["run-me"])')]
    assert "SKIP never selected" in out or "filtered.test.lua" in out, out
    print(f"held boots under qemu: {time.monotonic() - t0:.1f}s")

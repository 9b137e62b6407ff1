"""A profile's `build` runs when a VM of it first boots in a run, and the guest then
boots with what it built (here the kernel command line); a broken build of a
profile nobody boots fails nothing.  One real boot."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from provium.image.kernel import find_kernel

FILE = """
local vm = provium:vm("v", "built"):boot()
test("boots with what the build wrote", function(t)
  t:assert(vm:read_file("/proc/cmdline"):find("provium_built=1", 1, true), "the built command line")
  t:assert_eq(vm:run("/provium/bin/busybox", {"echo", "hi"}).stdout, "hi\\n")
end)
"""


@pytest.mark.qemu
def test_a_run_builds_the_profile_it_boots_and_only_that(tmp_path):
    kernel = find_kernel().path
    out = tmp_path / "out"
    (tmp_path / "provium.toml").write_text(f"""
[profiles.built]
kernel = "{kernel}"
initrd = ""
cmdline_file = "{{out}}/cmdline"   # only the build writes it: the boot needs the build first
memory = "256M"
agent_boot_timeout = 120   # a loaded shared machine; the boot itself is not what this tests
build_out = "{out}"
build = "echo 'console=ttyS0 quiet panic=-1 provium_built=1' > {{out}}/cmdline && echo built >> {tmp_path}/built.log"

[profiles.unused]
kernel = "bz"
build = "echo unused >> {tmp_path}/unused.log; exit 5"
""")
    (tmp_path / "a.test.lua").write_text(FILE)
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rerun.json"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--no-progress", "--vmm", "qemu", "a.test.lua"],
                       cwd=tmp_path, env=env, capture_output=True, timeout=600)
    text = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, text
    assert (tmp_path / "built.log").read_text() == "built\n"
    assert not (tmp_path / "unused.log").exists(), text
    print(f"profile build + one boot: {time.monotonic() - t0:.1f}s")

"""Host directory shares (virtiofs) on a real guest: read, write back, refusal to snapshot, clean-up."""

import os

import pytest

from provium.host.snapshot import SnapshotError

from qemu_util import needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    ro = tmp_path_factory.mktemp("build")
    (ro / "artifact.txt").write_text("built on the host\n")
    rw = tmp_path_factory.mktemp("out")
    return ro, rw


@pytest.fixture
def vm(vm_factory, dirs):
    # Shared by the module; test_nothing_is_left_after_shutdown shuts it down, and a
    # test running after it gets a new one.
    ro, rw = dirs
    return vm_factory.shared("sharer", "linux", {"shares": [
        {"host": str(ro), "guest": "/mnt/build", "readonly": True},
        {"host": str(rw), "guest": "/mnt/out"},
    ]})


def test_guest_reads_a_host_file(vm):
    assert vm.read_file("/mnt/build/artifact.txt") == b"built on the host\n"
    r = vm.run("echo x > /mnt/build/new.txt")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr


def test_host_sees_the_guests_write(vm, dirs):
    assert vm.run("echo from-guest > /mnt/out/result.txt && sync").exit_code == 0
    assert (dirs[1] / "result.txt").read_text() == "from-guest\n"
    assert not (dirs[0] / "new.txt").exists()


def test_a_share_blocks_snapshots_with_the_reason(vm):
    with pytest.raises(SnapshotError, match=r"host directory shares .*unmigratable"):
        vm.snapshot()
    assert vm.run("true").exit_code == 0  # still running normally


def test_nothing_is_left_after_shutdown(vm):
    daemons = list(vm.instance.share_daemons)
    assert len(daemons) == 2 and all(d.proc.poll() is None for d in daemons)
    sockets = [d.socket for d in daemons]
    vm.shutdown()
    assert all(d.proc.poll() is not None for d in daemons)
    for d in daemons:
        with pytest.raises(ProcessLookupError):
            os.kill(d.proc.pid, 0)
    assert not any(s.exists() for s in sockets)


CHILD = """
import sys, time
from provium import vmm
from provium.config import load
from provium.host import VM, Session
s = Session(vmm.create("qemu"), load(None))
vm = VM(s, "orphan", "linux").boot({"shares": [{"host": sys.argv[1], "guest": "/mnt/x"}]})
print(vm.instance.share_daemons[0].proc.pid, vm.instance.pid, flush=True)
time.sleep(600)
"""


def test_virtiofsd_dies_with_its_runner(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ))
    try:
        line = child.stdout.readline()
        assert line, "the child did not boot its VM"
        pids = [int(p) for p in line.split()]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if os.path.exists(f"/proc/{p}") and "zombie" not in _state(p)]
        time.sleep(0.1)
    assert left == [], f"virtiofsd/QEMU still running after their runner was killed: {left}"


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read().lower()
    except OSError:
        return "zombie"

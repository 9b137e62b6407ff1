"""Snapshots of real guests: state survives, restored VMs answer every op, bad
files fail fast and cleanly, guest RAM files do not leak, reset_between_tests."""

import os
import time
from pathlib import Path

import pytest
from qemu_util import needs_qemu, qemu_processes

from provium.host import VM
from provium.host.snapshot import Snapshot
from provium.vmm.snapfile import SnapshotFileError, read_meta

pytestmark = [pytest.mark.qemu, needs_qemu]


@pytest.fixture(scope="module")
def vm(session):
    v = VM(session, "snap", "linux", {"memory": 256 << 20})
    v.boot()
    yield v
    v.shutdown()


@pytest.fixture(scope="module")
def saved(vm, tmp_path_factory):
    """A snapshot taken with a file written and a background process running."""
    vm.write_file("/tmp/kept", b"before the snapshot")
    proc = vm.run_async("sh -c 'while :; do date +%s >> /tmp/ticks; sleep 0.2; done'")
    time.sleep(0.5)
    path = tmp_path_factory.mktemp("snap") / "a.bin"
    snap = vm.snapshot(str(path))
    return snap, proc


def test_ram_file_lives_with_the_vm(vm):
    ram = vm.instance.ram_file
    assert ram is not None and ram.exists() and str(ram).startswith("/dev/shm/provium-qemu-")
    assert vm.instance.ram_shared


def test_snapshot_keeps_the_source_running(vm, saved):
    snap, _proc = saved
    assert isinstance(snap, Snapshot) and snap.size() == os.stat(snap.path).st_size > 0
    meta = read_meta(snap.path)
    assert (meta.ram_mode, meta.memory_bytes, meta.vm_name) == ("file", 256 << 20, "snap")
    assert os.stat(snap.path).st_blocks * 512 < snap.size()  # sparse: untouched RAM is a hole
    assert vm.state == "booted" and vm.run("cat /tmp/kept").stdout == b"before the snapshot"
    assert not [f for f in os.listdir(os.path.dirname(snap.path)) if f.endswith(".tmp")]


def test_restore_into_fresh_vm_answers_every_op(session, vm, saved):
    snap, proc = saved
    other = VM(session, "restored", "linux")
    other.restore(snap)
    try:
        assert other.state == "booted" and other.cid != vm.cid
        assert other.read_file("/tmp/kept") == b"before the snapshot"
        # The background process started before the snapshot still runs and writes.
        n1 = len(other.read_file("/tmp/ticks").splitlines())
        time.sleep(0.6)
        assert len(other.read_file("/tmp/ticks").splitlines()) > n1
        assert other.run(f"kill -0 {proc.pid()}").exit_code == 0
        other.write_file("/tmp/new", b"x")
        assert other.stat("/tmp/new").size == 1
        assert "new" in [e.name for e in other.listdir("/tmp")]
        tail = other.tail_file("/tmp/ticks", start="beginning")
        assert tail.next(timeout=5)
        tail.close()
        assert other.run("echo hi").stdout == b"hi\n"
        # The guest's clock did not run backwards past the snapshot.
        assert int(other.run("date +%s").stdout) >= read_meta(snap.path).created_unix_ns // 10**9 - 1
        # The source is untouched by what the copy does.
        assert not vm.run("test -e /tmp/new").ok()
        # A restored VM (private RAM) can be snapshotted again (RAM in the stream) and restored.
        again = other.snapshot(snap.path + ".2")
        assert read_meta(again.path).ram_mode == "stream"
        third = VM(session, "third", "linux")
        third.restore(again.path)
        assert third.read_file("/tmp/new") == b"x"
        third.shutdown()
        again.delete()
    finally:
        other.shutdown()


def test_damaged_files_fail_fast_and_leak_nothing(session, saved, tmp_path):
    snap, _ = saved
    before = len(qemu_processes())
    data = Path(snap.path).read_bytes()
    meta = read_meta(snap.path)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotFileError, match="truncated"):
        VM(session, "t1", "linux").restore(str(cut))
    # Damage inside the device state: QEMU rejects the stream; we report it, never hang.
    bad = tmp_path / "bad.bin"
    mid = meta.state_offset + 64
    bad.write_bytes(data[:mid] + b"\xff" * 4096 + data[mid + 4096:])
    t = time.monotonic()
    v = VM(session, "t2", "linux")
    with pytest.raises(Exception, match="restore from .*bad.bin.* failed"):
        v.restore(str(bad))
    assert time.monotonic() - t < 30 and v.state == "created"
    assert len(qemu_processes()) == before


def test_ram_file_removed_at_shutdown(session):
    v = VM(session, "short", "linux", {"memory": 128 << 20})
    v.boot()
    ram = v.instance.ram_file
    assert ram.exists()
    v.shutdown()
    assert not ram.exists()


def test_reset_between_tests_on_a_real_guest(tmp_path):

    from provium.runner.file_runner import run_file
    from provium.runner.settings import RunSettings

    f = tmp_path / "r.test.lua"
    f.write_text('''
provium.reset_between_tests = true
local vm = provium:vm("a", "linux", {memory = "256M"}):boot()
vm:write_file("/tmp/base", "base")
local p = vm:run_async("sleep 300")
test("changes things", function(t)
  vm:write_file("/tmp/base", "changed")
  vm:write_file("/tmp/extra", "x")
end)
test("sees the baseline", function(t)
  t:assert_eq(vm:read_file("/tmp/base"), "base")
  t:assert(not vm:run("test -e /tmp/extra"):ok())
  t:assert_eq(p:status(), "running")
end)
''')
    events = []
    out = run_file(str(f), RunSettings(vmm="qemu"), events.append)
    assert out.chunk_error is None, out.chunk_error
    assert [(t.name, t.status, t.message) for t in out.tests] == [
        ("changes things", "passed", None), ("sees the baseline", "passed", None)]

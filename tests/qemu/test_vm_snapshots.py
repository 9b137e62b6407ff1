"""Snapshots of real guests: state survives, restored VMs answer every op, bad
files fail fast and cleanly, guest RAM files do not leak, reset_between_tests."""

import os
import time
from pathlib import Path

import pytest
from qemu_util import needs_qemu, qemu_processes

from provium.host.snapshot import Snapshot
from provium.vmm.snapfile import SnapshotFileError, read_meta

pytestmark = [pytest.mark.qemu, needs_qemu]


@pytest.fixture(scope="module")
def vm(vm_factory):
    # Module-scoped: `saved` below is a snapshot of this very guest.  No test here
    # leaves it unusable (test_rollback_in_place restores it to `saved`).
    return vm_factory.booted("snap", "linux", {"memory": 256 << 20})


@pytest.fixture(scope="module")
def saved(vm, tmp_path_factory):
    """A snapshot taken with a file written and a background process running."""
    vm.write_file("/tmp/kept", b"before the snapshot")
    proc = vm.run_async("sh -c 'while :; do date +%s >> /tmp/ticks; sleep 0.2; done'")
    time.sleep(0.5)
    path = tmp_path_factory.mktemp("snap") / "a.bin"
    snap = vm.snapshot(str(path))
    # The pid now: test_rollback_in_place makes `proc` a handle from before a restore.
    return snap, proc, proc.pid()


def test_snapshot_keeps_the_source_running(vm, saved):
    snap, _proc, _pid = saved
    assert isinstance(snap, Snapshot) and snap.size() == os.stat(snap.path).st_size > 0
    meta = read_meta(snap.path)
    assert (meta.ram_mode, meta.memory_bytes, meta.vm_name) == ("file", 256 << 20, "snap")
    assert os.stat(snap.path).st_blocks * 512 < snap.size()  # sparse: untouched RAM is a hole
    assert vm.state == "booted" and vm.run("cat /tmp/kept").stdout == b"before the snapshot"
    assert not [f for f in os.listdir(os.path.dirname(snap.path)) if f.endswith(".tmp")]


def test_restore_into_fresh_vm_answers_every_op(vm_factory, vm, saved):
    snap, _proc, pid = saved
    other = vm_factory.create("restored")
    other.restore(snap)
    try:
        assert other.state == "booted" and other.cid != vm.cid
        assert other.read_file("/tmp/kept") == b"before the snapshot"
        # The background process started before the snapshot still runs and writes.
        n1 = len(other.read_file("/tmp/ticks").splitlines())
        time.sleep(0.6)
        assert len(other.read_file("/tmp/ticks").splitlines()) > n1
        assert other.run(f"kill -0 {pid}").exit_code == 0
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
        third = vm_factory.create("third")
        third.restore(again.path)
        assert third.read_file("/tmp/new") == b"x"
        third.shutdown()
        again.delete()
    finally:
        other.shutdown()


def test_damaged_files_fail_fast_and_leak_nothing(vm_factory, saved, tmp_path):
    snap, _, _ = saved
    before = len(qemu_processes())
    data = Path(snap.path).read_bytes()
    meta = read_meta(snap.path)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotFileError, match="truncated"):
        vm_factory.create("t1").restore(str(cut))
    # Damage inside the device state: QEMU rejects the stream; we report it, never hang.
    bad = tmp_path / "bad.bin"
    mid = meta.state_offset + 64
    bad.write_bytes(data[:mid] + b"\xff" * 4096 + data[mid + 4096:])
    t = time.monotonic()
    v = vm_factory.create("t2")
    with pytest.raises(Exception, match="restore from .*bad.bin.* failed"):
        v.restore(str(bad))
    assert time.monotonic() - t < 30 and v.state == "created"
    assert len(qemu_processes()) == before


def test_rollback_in_place(vm, saved):
    snap, _proc, _pid = saved
    vm.write_file("/tmp/after", b"later")
    later = vm.run_async("sleep 300")
    vm.restore(snap)
    assert vm.state == "booted" and not vm.run("test -e /tmp/after").ok()
    assert vm.read_file("/tmp/kept") == b"before the snapshot"
    with pytest.raises(Exception, match="from before its reset"):
        later.status()


def test_ram_file_lives_with_the_vm_and_goes_at_shutdown(vm_factory):
    # Its own VM: the module's shared one may have been restored in place (private RAM) by now.
    v = vm_factory.create("short", opts={"memory": 128 << 20})
    v.boot()
    ram = v.instance.ram_file
    assert ram is not None and ram.exists() and str(ram).startswith("/dev/shm/provium-qemu-")
    assert v.instance.ram_shared
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


RUNNER = """
import json, sys
from provium.runner.file_runner import run_file
from provium.runner.settings import RunSettings
events = []
out = run_file(sys.argv[1], RunSettings(vmm="qemu", config_path=sys.argv[2]), events.append)
kinds = [e.KIND for e in events if e.KIND.startswith("fixture_")]
print(json.dumps({"kinds": kinds, "tests": [(t.name, t.status, t.message) for t in out.tests]}))
"""


def test_fixture_built_once_by_two_files_then_hit(tmp_path):
    """Two runner processes started together on one cold fixture: one builds, one waits;
    a later run restores from the cache."""
    import json
    import subprocess
    import sys

    (tmp_path / "provium.toml").write_text(f'[provium]\ncache_dir = "{tmp_path / "cache"}"\n')
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "base.fixture.lua").write_text(
        'local vm = provium:vm("base", "linux", {memory = "256M"}):boot()\n'
        'vm:write_file("/tmp/prepared", "yes")\nreturn vm:snapshot()\n')
    for name in ("a", "b"):
        (tmp_path / f"{name}.test.lua").write_text(
            'test("t", function(t)\n  local vm = provium:vm_fixture("fixtures/base")\n'
            '  t:assert_eq(vm:read_file("/tmp/prepared"), "yes")\nend)\n')

    def run(*names):
        procs = [subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / f"{n}.test.lua"),
                                   str(tmp_path / "provium.toml")], cwd=str(tmp_path),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in names]
        return [json.loads(p.communicate(timeout=300)[0].decode().strip().splitlines()[-1]) for p in procs]

    first = run("a", "b")
    assert all(r["tests"] == [["t", "passed", None]] for r in first), first
    kinds = [k for r in first for k in r["kinds"]]
    assert kinds.count("fixture_build_started") == 1 and kinds.count("fixture_build_waiting") == 1
    assert kinds.count("fixture_build_done") == 2 and kinds.count("fixture_cache_hit") == 2
    second = run("a")
    assert second[0]["kinds"] == ["fixture_cache_hit"] and second[0]["tests"] == [["t", "passed", None]]


def test_ram_files_of_a_killed_owner_are_swept(tmp_path):
    """SIGKILL the process that owns a VM: QEMU dies with it, its RAM directory stays on
    /dev/shm until the next provium process starts a VM backend's RAM directory."""
    import signal
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", """
import sys, time
from provium import vmm
from provium.config import load
from provium.host import Session, VM
s = Session(vmm.create("qemu"), load(None))
vm = VM(s, "doomed", "linux", {"memory": 128 << 20}).boot()
print(vm.instance.ram_file, flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE)
    ram = owner.stdout.readline().decode().strip()
    assert ram and os.path.exists(ram)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert os.path.exists(ram)  # left behind by the kill ...
    subprocess.run([sys.executable, "-c", "from provium.vmm.qemu import ram; ram.ram_dir(1 << 20).rmdir()"],
                   check=True)
    assert not os.path.exists(os.path.dirname(ram))  # ... and swept by the next process

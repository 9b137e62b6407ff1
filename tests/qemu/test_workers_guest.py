"""What only a real guest shows for issue 12: entry types of guest devices, worker
credentials, kill/join and streams inside the guest, `lo` up, the output cap.

One booted VM for the module (the built-in `linux` profile, chain mode); the
agent in it comes from an overlay built from this checkout's sources, so these
tests also prove a real guest runs the changed agent.
"""

import time

import pytest
from qemu_util import needs_qemu

from provium.host.errors import GuestOsError, HandleError
from provium.protocol.framing import OUTPUT_CAP, output_marker

pytestmark = [pytest.mark.qemu, needs_qemu]


@pytest.fixture
def vm(vm_factory):
    return vm_factory.shared("workers")  # shut down with the module's factory


def test_guest_entry_types(vm):
    vm.run("mkdir -p /tmp/et && cd /tmp/et && mkfifo fifo && mknod blk b 7 0 && ln -s /dev/null link "
           "&& : > file").assert_ok()
    assert vm.stat("/dev/null").entry_type == "char_device"
    assert vm.stat("/tmp/et/fifo").entry_type == "fifo"
    assert vm.stat("/tmp/et/blk").entry_type == "block_device"
    assert vm.stat("/tmp/et/link").entry_type == "char_device"
    assert vm.stat("/tmp/et/link", follow=False).entry_type == "symlink"
    assert vm.stat("/tmp").entry_type == "directory"
    kinds = {e.name: e.entry_type for e in vm.listdir("/tmp/et")}
    assert kinds == {"fifo": "fifo", "blk": "block_device", "link": "symlink", "file": "file"}


def test_worker_open_file_checks_the_workers_permissions(vm):
    vm.write_file("/tmp/secret", "root only", perm=0o600)
    vm.write_file("/tmp/public", "for all", perm=0o644)
    nobody = vm.spawn_worker(uid=65534, gid=65534)
    try:
        with pytest.raises(GuestOsError, match="Permission denied") as ei:
            nobody.open_file("/tmp/secret", "r")
        assert ei.value.errno == 13 and "uid 65534" in str(ei.value)
        with pytest.raises(GuestOsError, match="Permission denied"):
            nobody.open_file("/tmp/public", "a")
        f = nobody.open_file("/tmp/public", "r")
        assert f.read(100) == b"for all" and vm.open_file_count() == 1
    finally:
        assert nobody.join() == 0
    assert vm.open_file_count() == 0
    with pytest.raises(HandleError, match="joined"):
        f.read(1)
    with vm.spawn_worker() as root:
        assert root.open_file("/tmp/secret", "r").read(100) == b"root only"


def test_worker_kill_join_and_streams(vm):
    w = vm.spawn_worker(uid=65534, gid=65534)
    a = w.run_async("sleep 300")
    _b = w.run_async("sleep 300")  # kept (a dropped Process is reaped), never waited: the join reaps it
    s = w.run_async(["sh", "-c", "echo started; id -u; sleep 300"])
    out = s.stdout_stream()
    assert out.read_until("65534", "20s").endswith(b"65534")
    assert w.kill("KILL") == 3
    r = a.wait("20s")
    assert (r.status, r.signal) == ("signalled", 9)
    assert s.wait("20s").stdout == b"started\n65534\n"
    out.close()
    assert w.join("20s") == 128 + 9  # the second sleep: reaped by the join
    assert vm.run("pgrep -x sleep || true").stdout == b""


def test_loopback_is_up_and_a_local_daemon_answers(vm):
    assert int(vm.read_file("/sys/class/net/lo/flags"), 16) & 1  # IFF_UP
    vm.run("mkdir -p /tmp/www && echo hello-lo > /tmp/www/index.html").assert_ok()
    d = vm.run_async(["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/tmp/www"])
    try:
        deadline = time.monotonic() + 30
        while True:
            r = vm.run("wget -q -O - http://127.0.0.1:8080/index.html")
            if r.ok() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.stdout == b"hello-lo\n", r
    finally:
        d.kill("KILL")
        d.wait("10s")


def test_output_is_capped_in_the_guest(vm):
    r = vm.run(f"head -c {OUTPUT_CAP + 1000} /dev/zero; echo done >&2")
    assert r.stdout == bytes(OUTPUT_CAP) + output_marker("stdout", 1000)
    assert r.stderr == b"done\n"

"""The built-in `linux` profile booted under QEMU, driven through provium.host."""

import re
import time

import pytest


from qemu_util import needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]

BOOT_FILES = [
    {"path": "/etc/provium-test/hello.txt", "content": b"hello from the host\n", "mode": 0o600},
    {"path": "opt/tool.sh", "content": b"#!/bin/sh\necho tool-ran $1\n", "mode": 0o755},
]


@pytest.fixture
def vm(vm_factory):
    # One VM for the module (replaced if a test left it unusable); the factory shuts it down.
    return vm_factory.shared("ops", "linux", {"files": BOOT_FILES})


def test_runs_commands(vm):
    r = vm.run("echo out; echo err >&2; exit 3")
    assert (r.status, r.exit_code, r.stdout, r.stderr) == ("exited", 3, b"out\n", b"err\n")
    r = vm.run("uname -s; id -u; cat /proc/1/comm")
    assert r.stdout.split() == [b"Linux", b"0", b"init"]  # busybox init kept PID 1 (chain mode)
    assert vm.run("ls /sys/class/virtio-ports/").stdout.strip().startswith(b"vport")


def test_per_boot_files_are_in_the_guest(vm):
    assert vm.read_file("/etc/provium-test/hello.txt") == b"hello from the host\n"
    st = vm.stat("/etc/provium-test/hello.txt")
    assert (st.entry_type, st.perm, st.size) == ("file", 0o600, 20)
    assert vm.stat("/opt/tool.sh").perm == 0o755
    assert vm.run("/opt/tool.sh x").stdout == b"tool-ran x\n"


def test_files_stat_listdir_mkdir(vm):
    vm.mkdir("/tmp/a/b/c", {"parents": True})
    vm.write_file("/tmp/a/b/c/f.bin", bytes(range(256)) * 10)
    assert vm.read_file("/tmp/a/b/c/f.bin") == bytes(range(256)) * 10
    assert vm.stat("/tmp/a/b").entry_type == "directory"
    names = {e.name: e.entry_type for e in vm.listdir("/tmp/a/b/c")}
    assert names == {"f.bin": "file"}
    vm.rename("/tmp/a/b/c/f.bin", "/tmp/a/g.bin")
    vm.unlink("/tmp/a/g.bin")
    assert not vm.exists("/tmp/a/g.bin")


def test_syscalls(vm):
    pid = vm.syscall(39)  # getpid: the agent's own pid
    assert pid.errno == 0 and pid.ret > 1
    assert vm.run(f"cat /proc/{pid.ret}/cmdline").stdout.count(b"provium") >= 1
    uts = vm.syscall(63, {"args": [0], "bufs": [b"\0" * 390], "ptrs": [0]})  # uname(&buf)
    assert uts.ret == 0
    fields = [f.rstrip(b"\0") for f in (uts.out_bufs[0][i * 65:(i + 1) * 65] for i in range(6))]
    assert fields[0] == b"Linux"
    assert fields[2] == vm.run("uname -r").stdout.strip()
    bad = vm.syscall(2, {"args": [0, 0], "bufs": [b"/nonexistent\0"], "ptrs": [0]})  # open()
    assert bad.ret == -1 and bad.errno == 2


def test_processes_and_streams(vm):
    p = vm.run_async("for i in 1 2 3; do echo line$i; sleep 0.1; done; echo done >&2")
    out = p.stdout_stream()
    got = out.read_until("line3", 20)
    assert b"line1" in got and b"line3" in got
    r = p.wait(20)
    assert r.exit_code == 0 and r.stderr == b"done\n"
    out.close()
    vm.write_file("/tmp/log.txt", b"first\n")
    with vm.tail_file("/tmp/log.txt", {"start": "beginning"}) as tail:
        assert tail.read_until("first", 10).endswith(b"first")
        vm.run("echo second >> /tmp/log.txt")
        assert b"second" in tail.read_until("second", 10)


def test_worker_runs_as_another_uid(vm):
    w = vm.spawn_worker({"uid": 1000, "gid": 1000})
    try:
        assert w.run("id -u").stdout == b"1000\n"
        assert w.run("id -g").stdout == b"1000\n"
        assert vm.run("id -u").stdout == b"0\n"
        assert w.syscall(39).ret != vm.syscall(39).ret  # a separate process
    finally:
        w.close()


def test_clock_set_and_advance_seen_by_date(vm):
    clock = vm.clock()
    try:
        clock.set(2_000_000_000)
        t = int(vm.run("date +%s").stdout)
        assert 2_000_000_000 <= t < 2_000_000_000 + 30
        clock.advance(86_400)
        t2 = int(vm.run("date +%s").stdout)
        assert 2_000_000_000 + 86_400 <= t2 < 2_000_000_000 + 86_400 + 60
        assert vm.run("date -u +%Y").stdout.strip() == b"2033"
        assert abs(clock.get() - t2) < 30
    finally:
        clock.set(int(time.time()))  # the shared VM goes back to the present for the other tests


def test_pause_and_resume(vm):
    inst = vm.instance
    vm.pause()
    assert vm.state == "paused"
    status = vm.session.run(inst.qmp.execute("query-status"))
    assert status["status"] == "paused"
    time.sleep(0.3)
    vm.resume()
    assert vm.state == "booted"
    assert vm.session.run(inst.qmp.execute("query-status"))["status"] == "running"
    assert vm.run("echo back").stdout == b"back\n"


def test_large_transfers_both_ways_keep_their_bytes(vm):
    # Large bodies take the agent's bulk paths: read in place into the frame
    # decoder's buffer and written to the file from a view of it (host->guest),
    # and written from their own buffers or a command's collected chunks, not
    # copied into the frame (guest->host).  An odd size checks the last piece.
    import hashlib
    import os

    data = os.urandom((24 << 20) + 12345)
    vm.write_file("/tmp/big.bin", data)
    assert vm.run("sha256sum /tmp/big.bin").stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert vm.read_file("/tmp/big.bin") == data
    part = data[:(12 << 20) + 777]
    cmd = ["dd", "if=/tmp/big.bin", "bs=4096", f"count={len(part) // 4096 + 1}"]
    vm.run(["truncate", "-s", str(len(part)), "/tmp/big.bin"])
    assert vm.run(cmd).stdout == part  # a command's stdout in its exec result
    proc = vm.run_async(cmd)
    stream = proc.stdout_stream()
    got = []
    while (chunk := stream.next(60)) is not None:
        got.append(chunk)
    assert b"".join(got) == part  # and streamed
    r = proc.wait(60)
    assert r.exit_code == 0 and r.stdout == part  # and kept for wait (sent from the collected chunks)
    vm.unlink("/tmp/big.bin")


def test_console_has_the_guest_output(vm):
    tail = vm.console_tail(4096)
    assert tail, "the serial console log is empty"
    # busybox init's respawned console shell prints its banner there
    assert re.search(rb"BusyBox v[\d.]+", vm.instance.console_tail(1 << 20))


def test_guest_python_exits_cleanly_with_a_busy_daemon_thread(vm):
    # At exit CPython ends daemon threads still running Python with pthread_exit, which
    # glibc implements by dlopen()ing libgcc_s.so.1; without it in the runtime the
    # interpreter aborted (status 134) instead of exiting.
    from provium.image.runtime import GUEST_LIB, GUEST_PYTHON
    loader = vm.run(f"ls {GUEST_LIB}/ld-linux*").stdout.decode().split()[0]
    code = ("import threading\n"
            "def spin():\n"
            "    while True: pass\n"
            "threading.Thread(target=spin, daemon=True).start()\n"
            "print('bye')\n")
    vm.write_file("/tmp/spin.py", code.encode())
    r = vm.run(f"{loader} --library-path {GUEST_LIB} {GUEST_PYTHON} -S /tmp/spin.py", {"timeout": 60})
    assert (r.exit_code, r.stdout) == (0, b"bye\n"), r.stderr

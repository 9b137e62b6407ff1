"""Workers, clock, raw syscalls, read_mem and batch through the real agent (local backend)."""

import os
import time

import pytest

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import ArgumentError, HandleError, VmError
from provium.host.results import RunResult, Stat

SYS_GETPID = 39
SYS_GETPPID = 110
SYS_GETCWD = 79


@pytest.fixture(scope="module")
def vm():
    with Session(vmm.create("local"), load(None)) as s:
        yield VM(s, "layer0", "linux").boot()


# ---- workers -----------------------------------------------------------------------------

def test_worker_is_a_separate_process_with_its_own_pid(vm):
    w = vm.spawn_worker()
    assert w.handle() > 0
    agent_pid = vm.syscall(SYS_GETPID).ret
    assert agent_pid == vm.instance.pid
    wpid = w.syscall(SYS_GETPID)
    assert wpid.errno == 0 and wpid.result == wpid.ret and wpid.ret != agent_pid
    assert w.syscall(SYS_GETPPID).ret == agent_pid
    r = w.run("echo from-worker")
    assert isinstance(r, RunResult) and r.stdout == b"from-worker\n"
    assert w.run("sleep 5", timeout="100ms").timed_out
    p = w.run_async(["sh", "-c", "echo async; exit 3"])
    assert p.wait("5s").exit_code == 3
    assert w.join() == 0


def test_worker_credentials(vm, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to change credentials")
    w = vm.spawn_worker(uid=65534, gid=65534, groups=[])
    try:
        assert w.run("id -u; id -g").stdout == b"65534\n65534\n"
        secret = tmp_path / "secret"
        secret.write_text("x")
        secret.chmod(0o600)
        assert not w.run(["cat", str(secret)]).ok()  # nobody may not read root's 0600 file
    finally:
        w.close()


def test_worker_ops_after_join_are_refused(vm):
    w = vm.spawn_worker()
    w.join()
    for op in (lambda: w.run("true"), lambda: w.syscall(SYS_GETPID), lambda: w.kill(), lambda: w.join(),
               lambda: w.run_async("true"), lambda: w.syscall_async(SYS_GETPID)):
        with pytest.raises(HandleError, match="already joined"):
            op()
    w.close()  # never raises


def test_worker_open_file_after_join_is_refused(vm):
    w = vm.spawn_worker()
    w.join()
    with pytest.raises(HandleError, match="already joined"):
        w.open_file("/etc/hostname", {"read": True})


def test_worker_kill_and_async_syscall(vm):
    w = vm.spawn_worker()
    pending = w.syscall_async(SYS_GETPID)
    out = pending.await_()
    assert out.ret > 0 and out.ret != vm.instance.pid
    with pytest.raises(HandleError, match="Worker.syscall_async: handle already awaited"):
        pending.await_()
    w.kill("term")
    status = w.join()
    assert isinstance(status, int)
    w2 = vm.spawn_worker()
    with pytest.raises(ArgumentError, match="Worker.kill: signal must be int or string, got number"):
        w2.kill(2.5)
    w2.close()


def test_spawn_worker_option_errors(vm):
    with pytest.raises(ArgumentError, match="`thread=true` is not yet supported"):
        vm.spawn_worker(thread=True)
    with pytest.raises(ArgumentError, match="unknown option `user`"):
        vm.spawn_worker(user="nobody")


# ---- clock -------------------------------------------------------------------------------

def test_clock_reads_the_time(vm):
    c = vm.clock()
    now = time.time()
    assert abs(c.get() - now) < 5 and abs(c.now() - now) < 5
    ns = c.get_ns()
    assert isinstance(ns, int) and abs(ns / 1e9 - now) < 5


def test_clock_sleep_blocks(vm):
    c = vm.clock()
    t0 = time.monotonic()
    c.sleep(0.1)
    assert time.monotonic() - t0 >= 0.095
    c.sleep("1ms")
    c.sleep(None)
    with pytest.raises(ArgumentError, match="must be a finite, non-negative number"):
        c.sleep(-1)


def test_clock_set_and_advance_are_refused_on_local_and_host_clock_is_untouched(vm):
    c = vm.clock()
    before = time.time()
    for op in (lambda: c.set(1_700_000_000), lambda: c.set_ns(0), lambda: c.advance("1h"),
               lambda: c.advance(-3600)):
        with pytest.raises(VmError) as ei:
            op()
        assert "local backend" in str(ei.value) and "host" in str(ei.value)
    assert abs(time.time() - before) < 5
    with pytest.raises(ArgumentError, match="finite"):
        c.set(float("nan"))
    with pytest.raises(ArgumentError, match="Clock.advance: must be finite"):
        c.advance(float("inf"))


def test_agent_also_refuses_clock_changes_on_local(vm):
    # Belt and braces: even a request that bypasses the host check is refused.
    from provium.protocol.messages import SetTimeArgs

    res = vm._agent("set_time", SetTimeArgs(1_700_000_000 * 10**9))
    assert not res.ok and res.value.errno == 1
    assert abs(time.time() - vm.clock().get()) < 5


# ---- syscalls, read_mem ------------------------------------------------------------------

def test_syscall_integer_form(vm):
    r = vm.syscall(SYS_GETPID)
    assert r.ret == vm.instance.pid and r.errno == 0 and r.out_bufs == []
    assert r.as_dict()["result"] == r.ret
    bad = vm.syscall(99999)
    assert bad.ret < 0 and bad.errno == 38  # ENOSYS: failure is data, not an exception
    assert vm.syscall(SYS_GETPID, 1, 2, 3, 4, 5, 6, 7, 8).ret == r.ret  # extras ignored


def test_syscall_table_form_with_buffers(vm):
    r = vm.syscall(SYS_GETCWD, {"args": [0, 256], "bufs": [b"\0" * 256], "ptrs": [0]})
    assert r.ret > 0 and r.errno == 0
    assert r.out_bufs[0].split(b"\0")[0] == os.getcwd().encode()


def test_syscall_argument_errors(vm):
    with pytest.raises(ArgumentError, match="syscall: nr must be integer"):
        vm.syscall("getpid")
    with pytest.raises(ArgumentError, match="missing nr"):
        vm.syscall(None)
    with pytest.raises(ArgumentError, match="unknown key `buffers`"):
        vm.syscall(1, {"buffers": []})
    with pytest.raises(ArgumentError, match="not an argument slot"):
        vm.syscall(1, {"bufs": [b"x"], "ptrs": [6]})


def test_syscall_async_lets_other_ops_run(vm, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    # openat(AT_FDCWD, fifo, O_RDONLY) blocks until a writer appears.
    pending = vm.syscall_async(257, {"args": [-100, 0, 0], "bufs": [fifo.encode() + b"\0"], "ptrs": [1]})
    time.sleep(0.1)
    assert not pending.awaited
    assert vm.run("echo meanwhile").stdout == b"meanwhile\n"  # the agent is not blocked
    vm.run(f"exec 3>{fifo}; sleep 0.1")  # a writer unblocks the open
    fd = pending.await_().ret
    assert fd >= 0
    vm.syscall(3, fd)  # close it
    with pytest.raises(HandleError, match="syscall_async: handle already awaited"):
        pending.await_()


def test_read_mem_fault_is_data(vm):
    data, err = vm.read_mem(0, 8)
    assert data is None and err > 0


# ---- batch -------------------------------------------------------------------------------

def test_batch_returns_one_entry_per_op_in_order(vm, tmp_path):
    p = str(tmp_path / "b.txt")
    res = vm.batch(lambda b: (
        b.write_file(p, "batched"),
        b.read_file(p),
        b.stat(p),
        b.read_file(str(tmp_path / "missing")),
        b.run("echo hi"),
        b.mkdir(str(tmp_path / "d"), True),
        b.listdir(str(tmp_path / "d")),
        b.syscall(SYS_GETPID),
    ))
    assert len(res) == 8
    assert res[0] == {"ok": None}
    assert res[1] == {"ok": b"batched"}
    assert isinstance(res[2]["ok"], Stat) and res[2]["ok"].size == 7
    assert "err" in res[3] and "No such file" in res[3]["err"]
    assert res[4]["ok"].stdout == b"hi\n"
    assert res[5] == {"ok": None} and res[6] == {"ok": []}
    assert res[7]["ok"].ret == vm.instance.pid
    assert vm.batch(lambda b: None) == []


def test_batch_function_error_sends_nothing(vm, tmp_path):
    p = tmp_path / "never"

    def fn(b):
        b.write_file(str(p), "x")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        vm.batch(fn)
    assert not p.exists()
    with pytest.raises(ArgumentError, match="does not support the \\{args=, bufs=, ptrs=\\} table form"):
        vm.batch(lambda b: b.syscall(1, {"args": []}))

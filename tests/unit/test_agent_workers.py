"""Workers: separate agent processes with their own credentials, relayed by the parent."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from agent_client_util import agent_env, gone, spawn_agent
from provium.protocol.messages import (
    ExecArgs,
    GetPidArgs,
    KillArgs,
    OpenFileArgs,
    ProcStatusArgs,
    ProcStdinCloseArgs,
    ProcStdinWriteArgs,
    ProcStreamArgs,
    RunAsyncArgs,
    SpawnWorkerArgs,
    SyscallArgs,
    WaitArgs,
    WorkerExecArgs,
    WorkerJoinArgs,
    WorkerKillArgs,
    WorkerOpenFileArgs,
    WorkerRunAsyncArgs,
    WorkerSyscallArgs,
    WorkerSyscallAwaitArgs,
    WorkerSyscallBeginArgs,
)
from provium.protocol.types import OpenMode

SYS_GETPID, SYS_GETPPID, SYS_NANOSLEEP = 39, 110, 35


@pytest.fixture
def worker(agent):
    w = agent.value(SpawnWorkerArgs())
    yield w
    agent.call(WorkerJoinArgs(w))  # may already be joined by the test


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])




def test_a_worker_is_a_separate_child_process(agent, worker):
    wpid = agent.ok(WorkerSyscallArgs(worker, SyscallArgs(SYS_GETPID))).ret
    assert wpid > 0 and wpid != agent.proc.pid
    assert agent.ok(WorkerSyscallArgs(worker, SyscallArgs(SYS_GETPPID))).ret == agent.proc.pid
    r = agent.value(WorkerExecArgs(worker, ExecArgs("sh", ["-c", "echo $PPID"])))
    assert r.stdout == f"{wpid}\n".encode()  # its commands are its own children


def test_worker_with_other_credentials(agent):
    w = agent.value(SpawnWorkerArgs(uid=65534, gid=65534))
    try:
        r = agent.value(WorkerExecArgs(w, ExecArgs("id", ["-u"])))
        assert r.stdout == b"65534\n"
        assert agent.value(WorkerExecArgs(w, ExecArgs("id", ["-g"]))).stdout == b"65534\n"
        assert agent.value(WorkerExecArgs(w, ExecArgs("id", ["-G"]))).stdout == b"65534\n"
        # Its raw syscalls run as that user too: root-only files stay closed.
        r = agent.ok(WorkerSyscallArgs(w, SyscallArgs(257, [-100, 0, os.O_RDONLY], bufs=[b"/etc/shadow\0"], ptrs=[1])))
        assert (r.ret, r.errno) == (-1, 13)
    finally:
        assert agent.value(WorkerJoinArgs(w)).exit_status == 0
    w = agent.value(SpawnWorkerArgs(uid=65534, gid=65534, groups=[65534, 100]))
    try:
        groups = agent.value(WorkerExecArgs(w, ExecArgs("id", ["-G"]))).stdout.split()
        assert sorted(groups) == [b"100", b"65534"]
    finally:
        agent.value(WorkerJoinArgs(w))


def test_worker_run_async_maps_the_grandchild(agent, worker):
    wpid = agent.ok(WorkerSyscallArgs(worker, SyscallArgs(SYS_GETPID))).ret
    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("cat")))
    pid = agent.value(GetPidArgs(h))
    assert ppid(pid) == wpid
    assert agent.value(ProcStatusArgs(h)).value == "running"
    assert agent.value(ProcStdinWriteArgs(h, b"relayed\n")).written == 8
    assert agent.ok(ProcStdinCloseArgs(h)).ok
    r = agent.value(WaitArgs(h, timeout_ms=5000))
    assert (r.status.kind, r.stdout) == ("exited", b"relayed\n")
    assert agent.error(WaitArgs(h)).kind.value == "unknown_handle"  # consumed on both sides

    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("sleep", ["30"])))
    assert agent.ok(KillArgs(h, signal.SIGTERM)).ok
    r = agent.value(WaitArgs(h, timeout_ms=5000))
    assert (r.status.kind, r.status.value) == ("signalled", 15)

    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("true")))
    ch = agent.new_ch()
    agent.send(ch, "proc_stream", ProcStreamArgs(h))
    env = agent.recv(ch)
    assert env.kind == "agent_error" and env.data.kind.value == "unsupported"
    agent.value(WaitArgs(h))


def test_worker_wait_timeout_kills_the_grandchild_group(agent, worker):
    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("sh", ["-c", "sleep 30 & echo $!; sleep 30"])))
    time.sleep(0.2)
    t0 = time.monotonic()
    r = agent.value(WaitArgs(h, timeout_ms=200))
    assert time.monotonic() - t0 < 3
    assert r.status.kind == "timed_out"
    assert gone(int(r.stdout.split()[0]))


def test_worker_async_syscalls(agent, worker):
    sleep_ts = bytes(16)  # nanosleep({0, 0}) returns at once
    a = agent.value(WorkerSyscallBeginArgs(worker, SyscallArgs(SYS_GETPID)))
    b = agent.value(WorkerSyscallBeginArgs(worker, SyscallArgs(SYS_NANOSLEEP, bufs=[sleep_ts], ptrs=[0])))
    assert a != b
    wpid = agent.ok(WorkerSyscallArgs(worker, SyscallArgs(SYS_GETPID))).ret
    assert agent.ok(WorkerSyscallAwaitArgs(worker, a)).ret == wpid
    assert agent.ok(WorkerSyscallAwaitArgs(worker, b)).ret == 0
    err = agent.error(WorkerSyscallAwaitArgs(worker, a))
    assert err.kind.value == "unknown_handle" and str(a) in err.message


def test_worker_open_file_is_refused_with_the_way_out(agent, worker):
    err = agent.error(WorkerOpenFileArgs(worker, OpenFileArgs("/etc/hostname", OpenMode(read=True))))
    assert err.kind.value == "bad_request" and "openat" in err.message


def test_join_ends_the_worker_and_its_processes(agent):
    w = agent.value(SpawnWorkerArgs())
    wpid = agent.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
    h = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sleep", ["30"])))
    pid = agent.value(GetPidArgs(h))
    assert agent.value(WorkerKillArgs(w, 0)) == 1  # alive
    assert agent.value(WorkerJoinArgs(w)).exit_status == 0
    assert gone(wpid) and gone(pid)
    for op in (WorkerExecArgs(w, ExecArgs("true")), WorkerJoinArgs(w), WorkerKillArgs(w, 15),
               WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))):
        err = agent.error(op)
        assert err.kind.value == "unknown_handle"
        assert f"on unknown worker worker#{w}" in err.message
    assert agent.error(GetPidArgs(h)).kind.value == "unknown_handle"


def test_a_killed_worker_joins_with_128_plus_signal(agent):
    w = agent.value(SpawnWorkerArgs())
    assert agent.value(WorkerKillArgs(w, signal.SIGKILL)) == 1
    assert agent.value(WorkerJoinArgs(w)).exit_status == 128 + 9
    w = agent.value(SpawnWorkerArgs())
    agent.value(WorkerKillArgs(w, signal.SIGKILL))
    time.sleep(0.2)
    err = agent.error(WorkerExecArgs(w, ExecArgs("true")))
    assert err.kind.value == "bad_request" and "worker control channel error" in err.message
    agent.value(WorkerJoinArgs(w))


def test_spawn_worker_accepts_nil_data(agent):
    ch = agent.new_ch()
    agent.send(ch, "spawn_worker", None)
    env = agent.recv(ch)
    assert env.kind == "spawn_worker_result" and env.data.ok
    agent.value(WorkerJoinArgs(env.data.value))


@pytest.mark.parametrize("exec_env, errno, needle", [
    ('["/nonexistent/provium-agent"]', 2, "/nonexistent/provium-agent"),
    ('["false"]', 0, "before serving"),
    ("not json", 22, "PROVIUM_AGENT_EXEC"),
    ('"python"', 22, "JSON array"),
])
def test_spawn_worker_failures_are_os_errors(exec_env, errno, needle):
    c = spawn_agent(env=agent_env(PROVIUM_AGENT_EXEC=exec_env))
    try:
        res = c.ok(SpawnWorkerArgs())
        assert not res.ok and needle in res.value.message
        if errno:
            assert res.value.errno == errno
    finally:
        c.close()


def test_provium_agent_exec_is_the_argv_prefix():
    import sys

    prefix = [sys.executable, "-X", "utf8", "-m", "provium.agent"]
    c = spawn_agent(env=agent_env(PROVIUM_AGENT_EXEC=json.dumps(prefix)))
    try:
        w = c.value(SpawnWorkerArgs())
        pid = c.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert [a.decode() for a in argv[1:5]] == prefix[1:] and b"--worker-fd" in argv
        c.value(WorkerJoinArgs(w))
    finally:
        c.close()


def test_worker_id_out_of_range_is_a_bad_request(agent):
    err = agent.error(SpawnWorkerArgs(uid=-1))
    assert err.kind.value == "bad_request" and "uid" in err.message


def test_a_worker_that_cannot_take_its_credentials_fails_the_spawn():
    import sys

    # We run as root, where setuid always works: stand in a setuid that refuses,
    # as it would for an unprivileged agent, and go through the real start-up path.
    script = (
        "import os, sys\n"
        "def refuse(uid): raise PermissionError(1, 'Operation not permitted')\n"
        "os.setuid = refuse\n"
        "from provium.agent.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    c = spawn_agent(env=agent_env(PROVIUM_AGENT_EXEC=json.dumps([sys.executable, "-c", script])))
    try:
        res = c.ok(SpawnWorkerArgs(uid=12345))
        assert not res.ok and res.value.errno == 1
        assert "could not take credentials" in res.value.message and "12345" in res.value.message
        assert c.ok(SpawnWorkerArgs()).ok  # no credentials asked: that one starts
    finally:
        c.close()

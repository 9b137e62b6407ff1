"""Workers: separate agent processes with their own credentials, relayed by the parent."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from agent_client_util import agent_env, gone, spawn_agent
from provium.protocol.messages import (
    CloseArgs,
    Credit,
    ExecArgs,
    GetPidArgs,
    KillArgs,
    OpenFileArgs,
    ProcStatusArgs,
    ProcStdinCloseArgs,
    ProcStdinWriteArgs,
    ProcStreamArgs,
    ReadArgs,
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
    WriteArgs,
)
from provium.protocol.types import OpenMode, ProcStreamChannel

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



def test_worker_process_streams_are_relayed(agent, worker):
    script = "echo out1; echo err1 >&2; read x; echo out2 $x; echo err2 >&2"
    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("sh", ["-c", script])))
    out_ch, ack = agent.open_stream(ProcStreamArgs(h))
    assert ack.ok
    err_ch, ack = agent.open_stream(ProcStreamArgs(h, ProcStreamChannel.STDERR))
    assert ack.ok
    assert agent.read_stream(out_ch, want=5)[0] == b"out1\n"
    assert agent.read_stream(err_ch, want=5)[0] == b"err1\n"
    agent.value(ProcStdinWriteArgs(h, b"in\n"))
    data, end = agent.read_stream(out_ch)
    assert (data, end.reason) == (b"out2 in\n", "eof")
    data, end = agent.read_stream(err_ch)
    assert (data, end.reason) == (b"err2\n", "eof")
    r = agent.value(WaitArgs(h, timeout_ms=5000))
    assert r.stdout == b"out1\nout2 in\n"
    # A big output goes through both credit windows (worker -> parent -> us).
    h = agent.value(WorkerRunAsyncArgs(worker, RunAsyncArgs("head", ["-c", str(3 << 20), "/dev/zero"])))
    ch, ack = agent.open_stream(ProcStreamArgs(h))
    total = 0
    while True:
        env = agent.recv(ch)
        if env.kind == "stream_end":
            break
        total += len(env.data.data)
        agent.send(ch, "credit", Credit(len(env.data.data)))
    assert total == 3 << 20
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


@pytest.fixture
def open_dir():
    """A directory every user may search (pytest's tmp_path sits under a 0700 one)."""
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="provium-worker-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_worker_open_file_hands_over_a_file_opened_with_its_credentials(agent, open_dir):
    tmp_path = open_dir
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    os.chmod(secret, 0o600)
    os.chmod(tmp_path, 0o755)
    public = tmp_path / "public"
    public.write_bytes(b"hello")
    os.chmod(public, 0o644)
    nobody = agent.value(SpawnWorkerArgs(uid=65534, gid=65534))
    root = agent.value(SpawnWorkerArgs())
    try:
        res = agent.ok(WorkerOpenFileArgs(nobody, OpenFileArgs(str(secret), OpenMode(read=True))))
        assert not res.ok and res.value.errno == 13 and str(secret) in res.value.message
        res = agent.ok(WorkerOpenFileArgs(nobody, OpenFileArgs(str(public), OpenMode(write=True))))
        assert not res.ok and res.value.errno == 13  # write permission is the worker's too
        h = agent.value(WorkerOpenFileArgs(nobody, OpenFileArgs(str(public), OpenMode(read=True))))
        assert agent.value(ReadArgs(h, 100)).data == b"hello"  # an ordinary handle of ours
        h2 = agent.value(WorkerOpenFileArgs(root, OpenFileArgs(str(secret), OpenMode(read=True))))
        assert agent.value(ReadArgs(h2, 100)).data == b"root only"
        made = tmp_path / "made"
        h3 = agent.value(WorkerOpenFileArgs(root, OpenFileArgs(str(made), OpenMode(write=True, create=True),
                                                                create_perm=0o600)))
        assert agent.value(WriteArgs(h3, b"x")).written == 1
        assert os.stat(made).st_mode & 0o777 == 0o600
        assert agent.ok(CloseArgs(h3)).ok
        res = agent.ok(WorkerOpenFileArgs(root, OpenFileArgs(str(made), OpenMode())))
        assert not res.ok and res.value.errno == 22
        res = agent.ok(WorkerOpenFileArgs(root, OpenFileArgs(str(tmp_path / "missing"), OpenMode(read=True))))
        assert not res.ok and res.value.errno == 2
    finally:
        agent.value(WorkerJoinArgs(nobody))
        agent.value(WorkerJoinArgs(root))
    # Joining the worker closed what was opened through it.
    assert agent.error(ReadArgs(h, 1)).kind.value == "unknown_handle"
    assert agent.error(ReadArgs(h2, 1)).kind.value == "unknown_handle"
    held = [os.readlink(f"/proc/{agent.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{agent.proc.pid}/fd")]
    assert str(public) not in held and str(secret) not in held


def test_join_ends_the_worker_and_its_processes(agent):
    w = agent.value(SpawnWorkerArgs())
    wpid = agent.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
    h = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sleep", ["30"])))
    pid = agent.value(GetPidArgs(h))
    assert agent.value(WorkerKillArgs(w, 0)) == 1  # one process of its own, alive
    t0 = time.monotonic()
    assert agent.value(WorkerJoinArgs(w, timeout_ms=300)).exit_status == 128 + 9  # killed at the deadline
    assert time.monotonic() - t0 < 5
    assert gone(wpid) and gone(pid)
    for op in (WorkerExecArgs(w, ExecArgs("true")), WorkerJoinArgs(w), WorkerKillArgs(w, 15),
               WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))):
        err = agent.error(op)
        assert err.kind.value == "unknown_handle"
        assert f"on unknown worker worker#{w}" in err.message
    assert agent.error(GetPidArgs(h)).kind.value == "unknown_handle"


def test_worker_kill_reaches_its_processes_which_stay_waitable(agent):
    w = agent.value(SpawnWorkerArgs())
    wpid = agent.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
    a = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sleep", ["30"])))
    b = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sleep", ["30"])))
    c = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sh", ["-c", "exit 3"])))
    assert agent.value(WaitArgs(c, timeout_ms=5000)).status.value == 3  # waited: no longer the worker's
    assert agent.value(WorkerKillArgs(w, signal.SIGTERM)) == 2
    r = agent.value(WaitArgs(a, timeout_ms=5000))
    assert (r.status.kind, r.status.value) == ("signalled", 15)
    assert agent.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret == wpid  # the worker itself lives on
    assert agent.value(WorkerExecArgs(w, ExecArgs("true"))).status.kind == "exited"
    # join reaps the one nobody waited for and reports the worst status.
    assert agent.value(WorkerJoinArgs(w)).exit_status == 128 + 15
    assert gone(wpid)
    assert agent.error(WaitArgs(b)).kind.value == "unknown_handle"
    w = agent.value(SpawnWorkerArgs())
    d = agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("sh", ["-c", "exit 7"])))
    agent.value(WorkerRunAsyncArgs(w, RunAsyncArgs("true")))
    assert agent.value(WorkerJoinArgs(w)).exit_status == 7
    assert agent.error(WaitArgs(d)).kind.value == "unknown_handle"
    w = agent.value(SpawnWorkerArgs())
    assert agent.value(WorkerKillArgs(w, 15)) == 0  # nothing of its own: nothing signalled
    assert agent.ok(WorkerKillArgs(w, 99)).value.errno == 22
    assert agent.value(WorkerJoinArgs(w)).exit_status == 0


def test_a_worker_that_died_joins_with_128_plus_signal(agent):
    w = agent.value(SpawnWorkerArgs())
    wpid = agent.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
    os.kill(wpid, signal.SIGKILL)
    time.sleep(0.2)
    err = agent.error(WorkerExecArgs(w, ExecArgs("true")))
    assert err.kind.value == "bad_request" and "worker control channel error" in err.message
    assert agent.value(WorkerJoinArgs(w)).exit_status == 128 + 9


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

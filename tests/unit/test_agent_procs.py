"""exec, run_async and the process ops, against the real agent subprocess."""

from __future__ import annotations

import os
import signal
import time

import pytest

from agent_client_util import gone, inproc_agent
from provium.protocol.messages import (
    ExecArgs,
    GetPidArgs,
    GetTimeArgs,
    KillArgs,
    ProcStatusArgs,
    ProcStdinCloseArgs,
    ProcStdinWriteArgs,
    ProcStreamArgs,
    RunAsyncArgs,
    WaitArgs,
)
from provium.protocol.types import ProcStreamChannel




def test_exec_output_status_stdin_env_cwd(agent, tmp_path):
    r = agent.value(ExecArgs("sh", ["-c", "echo out; echo err >&2; exit 3"]))
    assert (r.status.kind, r.status.value, r.stdout, r.stderr) == ("exited", 3, b"out\n", b"err\n")
    r = agent.value(ExecArgs("cat", stdin=b"fed \x00 bytes"))
    assert r.stdout == b"fed \x00 bytes"
    big = os.urandom(300_000)  # more than a pipe holds: stdin and stdout must flow together
    assert agent.value(ExecArgs("cat", stdin=big)).stdout == big
    r = agent.value(ExecArgs("sh", ["-c", "echo $FOO-$HOME"], env={"FOO": "bar"}))
    assert r.stdout == f"bar-{os.environ.get('HOME', '')}\n".encode()
    r = agent.value(ExecArgs("/usr/bin/env", env={"ONLY": "1"}, env_clear=True))
    assert r.stdout == b"ONLY=1\n"
    r = agent.value(ExecArgs("pwd", cwd=str(tmp_path)))
    assert r.stdout == f"{tmp_path}\n".encode()
    r = agent.value(ExecArgs("sh", ["-c", "kill -9 $$"]))
    assert (r.status.kind, r.status.value) == ("signalled", 9)
    r = agent.value(ExecArgs("head", ["-c", "1"], stdin=b"x" * 1_000_000))  # stops reading early
    assert r.stdout == b"x" and r.status.kind == "exited"


def test_exec_spawn_failures_are_os_errors(agent, tmp_path):
    res = agent.ok(ExecArgs("/nonexistent/binary"))
    assert not res.ok and res.value.errno == 2 and "/nonexistent/binary" in res.value.message
    script = tmp_path / "noexec"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o644)
    res = agent.ok(ExecArgs(str(script)))
    assert not res.ok and res.value.errno == 13
    res = agent.ok(ExecArgs("true", cwd=str(tmp_path / "nowhere")))
    assert not res.ok and res.value.errno == 2 and "nowhere" in res.value.message
    res = agent.ok(RunAsyncArgs("/nonexistent/binary"))
    assert not res.ok and "No such file" in res.value.message


def test_exec_timeout_kills_the_whole_process_group(agent):
    t0 = time.monotonic()
    r = agent.value(ExecArgs("sh", ["-c", "sleep 30 & echo $!; sleep 30"], timeout_ms=300))
    assert time.monotonic() - t0 < 3
    assert r.status.kind == "timed_out"
    grandchild = int(r.stdout.split()[0])  # partial output survives the kill
    assert gone(grandchild)


def alive(pid: int) -> bool:
    return not gone(pid, timeout=0)


def children_of(pid: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
        if kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.01)


@pytest.fixture
def reap_later():
    """Pids a test leaves running on purpose; their process groups are killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            if pgid != os.getpgrp():  # every agent child leads its own group
                os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_exec_returns_while_a_daemon_it_started_keeps_running(agent, reap_later):
    # `sh -c "server &"`: the shell exits at once, the background job inherits
    # stdout.  exec must come back with the shell's status, not wait for the job.
    t0 = time.monotonic()
    r = agent.value(ExecArgs("sh", ["-c", "sleep 60 & echo $!"]), timeout=10)
    elapsed = time.monotonic() - t0
    daemon = int(r.stdout.split()[0])
    reap_later.append(daemon)
    assert elapsed < 1.5
    assert (r.status.kind, r.status.value) == ("exited", 0)
    assert alive(daemon)  # not killed: starting servers is what this is for
    # With a deadline it is the same: the deadline is for the command, not for its daemons.
    r = agent.value(ExecArgs("sh", ["-c", "sleep 60 & echo $!"], timeout_ms=5000), timeout=10)
    reap_later.append(int(r.stdout.split()[0]))
    assert (r.status.kind, r.status.value) == ("exited", 0)
    assert alive(int(r.stdout.split()[0]))


def test_exec_keeps_late_output_of_leftovers_out_and_never_blocks_them(agent, tmp_path, reap_later):
    marker = tmp_path / "wrote-it-all"
    # The job prints well after the shell exited, more than a pipe holds, then
    # records that its writes went through (no SIGPIPE, no full pipe).
    script = f"(sleep 0.5; echo late; head -c 300000 /dev/zero; touch {marker}; sleep 60) & echo $! >&2; echo early"
    t0 = time.monotonic()
    r = agent.value(ExecArgs("sh", ["-c", script]), timeout=10)
    assert time.monotonic() - t0 < 0.5
    reap_later.append(int(r.stderr))
    assert r.stdout == b"early\n" and r.status.value == 0
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the leftover job blocked writing its output"
        time.sleep(0.05)
    r = agent.value(ExecArgs("echo", ["next"]))
    assert r.stdout == b"next\n"  # nothing of the job's output leaks into later results


def test_a_chatty_leftover_cannot_hold_exec_beyond_the_grace(agent, reap_later):
    from provium.agent.children import EXIT_GRACE_MAX

    t0 = time.monotonic()
    r = agent.value(ExecArgs("sh", ["-c", "(while :; do echo tick; sleep 0.02; done) & echo $! >&2"]),
                    timeout=10)
    elapsed = time.monotonic() - t0
    reap_later.append(int(r.stderr))
    assert elapsed < EXIT_GRACE_MAX + 0.8
    assert r.stdout.startswith(b"tick\n") and r.status.value == 0


def test_output_a_helper_prints_right_after_the_exit_is_kept(agent):
    r = agent.value(ExecArgs("sh", ["-c", "(sleep 0.05; echo from-helper) & echo from-shell"]))
    assert r.stdout == b"from-shell\nfrom-helper\n"


def test_wait_returns_after_kill_although_a_grandchild_holds_the_pipes(agent, reap_later):
    # dash forks `sleep` (no exec of the last command): SIGTERM to the shell
    # leaves sleep running with the pipes.
    h = agent.value(RunAsyncArgs("sh", ["-c", "sleep 60; exit 0"]))
    shell = agent.value(GetPidArgs(h))
    (grandchild,) = children_of(shell)
    reap_later.append(grandchild)
    assert agent.ok(KillArgs(h, signal.SIGTERM)).ok
    t0 = time.monotonic()
    r = agent.value(WaitArgs(h), timeout=10)
    assert time.monotonic() - t0 < 1.5
    assert (r.status.kind, r.status.value) == ("signalled", 15)
    assert alive(grandchild)  # kill signals the child only, and wait kills nothing


def test_wait_with_a_timeout_reports_the_real_exit_when_leftovers_hold_the_pipes(agent, reap_later):
    h = agent.value(RunAsyncArgs("sh", ["-c", "sleep 60 & echo $!; exit 5"]))
    t0 = time.monotonic()
    r = agent.value(WaitArgs(h, timeout_ms=5000), timeout=10)
    reap_later.append(int(r.stdout.split()[0]))
    assert time.monotonic() - t0 < 1.5
    assert (r.status.kind, r.status.value, r.stdout.endswith(b"\n")) == ("exited", 5, True)


def test_proc_stream_ends_once_the_process_exited_and_leftovers_hold_the_pipe(agent, reap_later):
    h = agent.value(RunAsyncArgs("sh", ["-c", "echo one; sleep 60 & echo $! >&2; sleep 0.2"]))
    ch, ack = agent.open_stream(ProcStreamArgs(h, ProcStreamChannel.STDOUT))
    assert ack.ok
    data, end = agent.read_stream(ch, timeout=5)
    assert data == b"one\n" and end.reason == "eof"
    r = agent.value(WaitArgs(h), timeout=5)
    reap_later.append(int(r.stderr))
    assert r.stdout == b"one\n" and r.status.value == 0


def test_run_async_wait_and_one_shot(agent):
    h = agent.value(RunAsyncArgs("sh", ["-c", "echo a; echo b >&2; exit 4"]))
    r = agent.value(WaitArgs(h))
    assert (r.status.value, r.stdout, r.stderr) == (4, b"a\n", b"b\n")
    err = agent.error(WaitArgs(h))
    assert err.kind.value == "unknown_handle" and f"proc#{h}" in err.message
    assert agent.value(ProcStatusArgs(h)).value == "unknown"  # not an error
    assert agent.error(GetPidArgs(h)).kind.value == "unknown_handle"


def test_wait_timeout_kills_the_group(agent):
    h = agent.value(RunAsyncArgs("sh", ["-c", "sleep 30 & echo $!; sleep 30"]))
    time.sleep(0.2)
    t0 = time.monotonic()
    r = agent.value(WaitArgs(h, timeout_ms=200))
    assert time.monotonic() - t0 < 3
    assert r.status.kind == "timed_out"
    assert gone(int(r.stdout.split()[0]))


def test_kill_pid_status_and_stdin(agent):
    h = agent.value(RunAsyncArgs("cat"))
    pid = agent.value(GetPidArgs(h))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    assert int(fields[2]) == pid  # its own process group
    assert agent.value(ProcStatusArgs(h)).value == "running"
    assert agent.value(ProcStdinWriteArgs(h, b"ping\n")).written == 5
    assert agent.ok(ProcStdinCloseArgs(h)).ok
    res = agent.ok(ProcStdinWriteArgs(h, b"late"))
    assert not res.ok and res.value.errno == 9
    r = agent.value(WaitArgs(h, timeout_ms=5000))
    assert (r.status.kind, r.stdout) == ("exited", b"ping\n")

    h = agent.value(RunAsyncArgs("sleep", ["30"]))
    assert agent.ok(KillArgs(h, signal.SIGTERM)).ok
    r = agent.value(WaitArgs(h, timeout_ms=5000))
    assert (r.status.kind, r.status.value) == ("signalled", 15)

    h = agent.value(RunAsyncArgs("true"))
    deadline = time.monotonic() + 5
    while agent.value(ProcStatusArgs(h)).value != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert agent.ok(KillArgs(h, signal.SIGKILL)).ok  # already exited: tolerated
    res = agent.ok(KillArgs(h, 1000))
    assert res.ok  # reaped: nothing is signalled, whatever the number
    agent.value(WaitArgs(h))
    assert agent.error(KillArgs(h, 15)).kind.value == "unknown_handle"


def test_kill_with_a_bad_signal_number_is_an_os_error(agent):
    h = agent.value(RunAsyncArgs("sleep", ["30"]))
    res = agent.ok(KillArgs(h, 1000))
    assert not res.ok and res.value.errno == 22
    agent.ok(KillArgs(h, signal.SIGKILL))
    agent.value(WaitArgs(h))


def test_a_long_wait_does_not_block_other_channels(agent):
    h = agent.value(RunAsyncArgs("sleep", ["0.6"]))
    ch = agent.new_ch()
    agent.send(ch, "wait", WaitArgs(h))
    t0 = time.monotonic()
    assert agent.value(GetTimeArgs()).ns > 0
    assert agent.value(ProcStatusArgs(h)).value == "running"
    assert time.monotonic() - t0 < 0.4
    env = agent.recv(ch)
    assert env.kind == "wait_result" and env.data.value.status.kind == "exited"


def test_proc_stream_replays_and_follows_then_wait_still_has_everything(agent):
    h = agent.value(RunAsyncArgs("sh", ["-c", "echo one; sleep 0.3; echo two; echo e >&2"]))
    time.sleep(0.1)
    ch, ack = agent.open_stream(ProcStreamArgs(h, ProcStreamChannel.STDOUT))
    assert ack.ok
    data, end = agent.read_stream(ch)
    assert data == b"one\ntwo\n" and end.reason == "eof"
    ch2, ack = agent.open_stream(ProcStreamArgs(h, ProcStreamChannel.STDERR))
    data, end = agent.read_stream(ch2)
    assert data == b"e\n" and end.reason == "eof"
    r = agent.value(WaitArgs(h))
    assert r.stdout == b"one\ntwo\n" and r.stderr == b"e\n"
    res = agent.open_stream(ProcStreamArgs(h))[1]
    assert not res.ok and res.value.errno == 9 and "BEFORE proc:wait" in res.value.message


def test_proc_stream_of_a_large_output_respects_the_window(agent):
    from provium.protocol.framing import STREAM_WINDOW

    size = 3 * STREAM_WINDOW
    h = agent.value(RunAsyncArgs("head", ["-c", str(size), "/dev/zero"]))
    ch, ack = agent.open_stream(ProcStreamArgs(h))
    data, end = agent.read_stream(ch, STREAM_WINDOW)
    assert len(data) == STREAM_WINDOW and end is None
    agent.recv_none(ch, 0.3)
    agent.send(ch, "credit", {"bytes": 8 * STREAM_WINDOW})
    rest, end = agent.read_stream(ch)
    assert len(data) + len(rest) == size and end.reason == "eof"
    assert len(agent.value(WaitArgs(h)).stdout) == size


def test_reap_once_takes_orphans_but_never_our_own_children():
    import subprocess

    from provium.agent import reaper

    stray = subprocess.Popen(["true"])  # not registered: looks like an orphan
    with reaper.SPAWN_LOCK:
        ours = subprocess.Popen(["sh", "-c", "exit 7"])
        reaper.register(ours.pid)
    deadline = time.monotonic() + 5
    while not (_is_zombie(stray.pid) and _is_zombie(ours.pid)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reaper.reap_once() >= 1
    assert not os.path.exists(f"/proc/{stray.pid}")
    assert _is_zombie(ours.pid)  # left for its own wait, exit status intact
    assert ours.wait() == 7
    reaper.unregister(ours.pid)
    stray.wait()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def test_as_pid_1_the_agent_reaps_orphans():
    import shutil
    import socket
    import subprocess
    import sys

    from agent_client_util import AgentConn, agent_env

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a PID namespace")
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "provium.agent",
         "--fd", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), env=agent_env(),
    )
    theirs.close()
    c = AgentConn(ours, proc=proc)
    try:
        assert c.hello().kind == "hello_ok"
        from provium.protocol.messages import SyscallArgs

        assert c.ok(SyscallArgs(39)).ret == 1  # we really are PID 1 in there
        r = c.value(ExecArgs("sh", ["-c", "sleep 0.1 </dev/null >/dev/null 2>&1 & echo $!"]))
        orphan = int(r.stdout)
        time.sleep(0.3)  # the orphan exited; it is our zombie now
        deadline = time.monotonic() + 5
        while True:
            r = c.value(ExecArgs("cat", [f"/proc/{orphan}/stat"]))
            if r.status.value != 0:
                break  # reaped
            assert time.monotonic() < deadline, r.stdout
            time.sleep(0.1)
        for _ in range(20):  # our own children keep their exit codes
            assert c.value(ExecArgs("sh", ["-c", "exit 7"])).status.value == 7
    finally:
        assert c.close() == 0


def test_exec_looks_bare_names_up_in_the_childs_own_path(agent, tmp_path):
    first, second, empty = tmp_path / "first", tmp_path / "second", tmp_path / "empty"
    for d in (first, second, empty):
        d.mkdir()
    (first / "tool").write_text("#!/bin/sh\necho first\n")  # not executable: skipped, like execvp
    (second / "tool").write_text("#!/bin/sh\necho second\n")
    os.chmod(second / "tool", 0o755)
    r = agent.value(ExecArgs("tool", env={"PATH": f"{empty}:{first}:{second}"}))
    assert r.stdout == b"second\n"
    res = agent.ok(ExecArgs("tool", env={"PATH": f"{empty}:{first}"}))
    assert not res.ok and res.value.errno == 13 and "tool" in res.value.message
    res = agent.ok(ExecArgs("tool", env={"PATH": str(empty)}))
    assert not res.ok and res.value.errno == 2 and "tool" in res.value.message
    r = agent.value(ExecArgs("env", env_clear=True))
    assert r.stdout == b""  # found through the default path; the child's env stays empty


def test_without_pidfd_the_same_rules_hold(monkeypatch, reap_later):
    # Kernels before 5.3 have no pidfd: exits are then noticed by polling.
    from agent_client_util import inproc_agent
    from provium.agent import children

    monkeypatch.setattr(children, "_pidfd", lambda pid: None)
    c = inproc_agent()
    try:
        t0 = time.monotonic()
        r = c.value(ExecArgs("sh", ["-c", "sleep 60 & echo $!; echo err >&2; exit 3"]))
        reap_later.append(int(r.stdout))
        assert time.monotonic() - t0 < 1.5
        assert (r.status.value, r.stderr) == (3, b"err\n") and alive(int(r.stdout))
        r = c.value(ExecArgs("sh", ["-c", "sleep 30"], timeout_ms=200))
        assert r.status.kind == "timed_out"
        h = c.value(RunAsyncArgs("sh", ["-c", "sleep 60; exit 0"]))
        (grandchild,) = children_of(c.value(GetPidArgs(h)))
        reap_later.append(grandchild)
        c.ok(KillArgs(h, signal.SIGTERM))
        t0 = time.monotonic()
        r = c.value(WaitArgs(h), timeout=10)
        assert time.monotonic() - t0 < 1.5 and (r.status.kind, r.status.value) == ("signalled", 15)
    finally:
        c.close()


def test_proc_stream_keeps_output_that_lands_between_its_read_and_its_end_check(monkeypatch):
    # Regression: the stream read (empty), then the collector appended the last output
    # and finished, then the stream saw `done` and ended without sending that output.
    # Widen that window deterministically: every empty read waits for the buffer to finish.
    from provium.agent import children

    real_read = children.OutputBuffer.read

    def racy_read(self, pos, limit):
        data = real_read(self, pos, limit)
        if not data:
            with self.cond:
                self.cond.wait_for(lambda: self.done, 5)
        return data

    monkeypatch.setattr(children.OutputBuffer, "read", racy_read)
    agent = inproc_agent()
    try:
        h = agent.value(RunAsyncArgs("sh", ["-c", "sleep 0.2; echo e1 >&2; echo e2 >&2"]))
        ch, ack = agent.open_stream(ProcStreamArgs(h, ProcStreamChannel.STDERR))
        assert ack.ok
        data, end = agent.read_stream(ch)
        assert data == b"e1\ne2\n" and end.reason == "eof"
        assert agent.value(WaitArgs(h)).stderr == b"e1\ne2\n"
    finally:
        agent.close()


def test_a_cancelled_exec_kills_its_command_by_event(agent, tmp_path):
    """Past its first slice an exec waits on the channel's cancel descriptor (no
    periodic wake-up); a cancel then still kills the command at once."""
    from provium.protocol.messages import Cancel, ExecArgs

    pidfile = tmp_path / "pid"
    ch = agent.new_ch()
    agent.send(ch, "exec", ExecArgs("sh", ["-c", f"echo $$ > {pidfile}; exec sleep 30"]))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    time.sleep(0.5)  # well past the first slice: the cancel descriptor is in the poll set
    t = time.monotonic()
    agent.send(ch, Cancel.KIND, Cancel())
    assert gone(pid, 5.0)
    assert time.monotonic() - t < 2.0
    agent.recv_none(ch, 0.3)  # the cancelled request's reply is dropped


def test_collect_waits_on_the_cancel_descriptor_after_its_first_slice():
    import threading

    from provium.agent import children

    class Ctx:
        cancelled = False
        made = 0

        def __init__(self):
            self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

        def cancel_fd(self):
            self.made += 1
            return self.efd

    ctx = Ctx()
    child = children.spawn("sleep", ["30"], children.child_env(False, {}), None)
    out, err = children.OutputBuffer(), children.OutputBuffer()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=children.collect(
        child, out, err, pidfd=child.pidfd, feed=b"", ctx=ctx)))
    t.start()
    time.sleep(children.SLICE * 3)
    assert ctx.made == 1  # asked once, after the first quiet slice
    ctx.cancelled = True
    os.eventfd_write(ctx.efd, 1)
    t.join(5)
    assert not t.is_alive()
    assert result["r"][1] is True  # killed
    child.reap()
    child.close_pidfd()
    os.close(ctx.efd)

"""vm.run / vm.run_async / Process through the real agent (local backend)."""

import gc
import os
import time

import pytest

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import ArgumentError, CommandFailed, GuestOsError


@pytest.fixture(scope="module")
def vm():
    with Session(vmm.create("local"), load(None)) as s:
        yield VM(s, "cmds", "linux").boot()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


# ---- run ---------------------------------------------------------------------------------

def test_shell_form_and_results(vm):
    r = vm.run("printf 'a\\nb\\n' | wc -l; echo oops >&2; exit 4")
    assert (r.status, r.exit_code, r.stdout.strip(), r.stderr, r.ok()) == ("exited", 4, b"2", b"oops\n", False)
    assert not r.timed_out and r.signal is None
    with pytest.raises(CommandFailed) as ei:
        r.assert_ok()
    assert "code=4" in str(ei.value) and 'stderr="oops\\n"' in str(ei.value)
    ok = vm.run("true")
    assert ok.ok() and ok.exit_code == 0 and ok.stdout == b""
    ok.assert_ok()


def test_argv_forms_env_cwd_stdin(vm, tmp_path):
    assert vm.run(["echo", "a  b", "$HOME"]).stdout == b"a  b $HOME\n"  # no shell
    assert vm.run("echo", {"args": ["x", "y"]}).stdout == b"x y\n"
    assert vm.run("printenv FOO", env={"FOO": "bar"}).stdout == b"bar\n"
    r = vm.run(["/usr/bin/env"], env={"ONLY": "1"}, env_clear=True)
    assert r.stdout == b"ONLY=1\n"
    assert vm.run("pwd", cwd=str(tmp_path)).stdout.decode().strip() == str(tmp_path)
    assert vm.run("tr a-z A-Z", stdin="shout").stdout == b"SHOUT"
    assert vm.run(["cat"], {"stdin": b"\0\1\2"}).stdout == b"\0\1\2"


def test_missing_binary_raises_errno_2(vm):
    with pytest.raises(GuestOsError) as ei:
        vm.run(["/nonexistent/binary"])
    assert ei.value.errno == 2 and "No such file" in str(ei.value)


def test_timeout_kills_the_command_and_its_grandchildren(vm, tmp_path):
    pidfile = tmp_path / "bg.pid"
    t0 = time.monotonic()
    r = vm.run(f"sleep 30 & echo $! > {pidfile}; echo started; wait", timeout="300ms")
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.status == "timed_out" and r.exit_code == -2
    assert r.stdout == b"started\n"  # output so far is kept
    assert elapsed < 3, f"took {elapsed:.2f}s: something held the pipes"
    assert wait_gone(int(pidfile.read_text())), "the background grandchild survived the timeout"
    assert vm.run("sleep 5", {"timeout_ms": 100}).timed_out


def test_run_argument_errors(vm):
    with pytest.raises(ArgumentError, match="VM.run expects at least a command string"):
        vm.run(None)
    with pytest.raises(ArgumentError, match="unknown option `tiemout`"):
        vm.run("true", tiemout="1s")
    with pytest.raises(ArgumentError, match="VM.run timeout: must be a finite, non-negative number"):
        vm.run("true", timeout=float("nan"))


# ---- run_async / Process -----------------------------------------------------------------

def test_run_async_wait_and_one_shot(vm):
    p = vm.run_async("echo out; echo err >&2; exit 7")
    assert p.handle() > 0 and repr(p) == f"process(proc#{p.handle()})"
    r = p.wait()
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    with pytest.raises(GuestOsError) as ei:
        p.wait()
    assert "one-shot" in str(ei.value) and "already waited" in str(ei.value) and ei.value.errno == 9
    assert p.status() == "exited"
    p.kill()  # tolerant once reaped


def test_wait_zero_rejected_and_wait_timeout_kills(vm):
    p = vm.run_async(["sleep", "60"])
    with pytest.raises(ArgumentError, match="timeout=0 would SIGKILL"):
        p.wait(0)
    with pytest.raises(ArgumentError, match="timeout=0"):
        p.wait("0ms")
    pid = p.pid()
    assert p.status() == "running" and pid_alive(pid)
    t0 = time.monotonic()
    r = p.wait("150ms")
    assert r.timed_out and time.monotonic() - t0 < 3
    assert wait_gone(pid)


def test_kill_with_signal_names(vm):
    # argv form: with `sh -c`, dash forks `sleep`, which would keep the output
    # pipes open after the shell is killed (wait then waits for them).
    p = vm.run_async(["sleep", "60"])
    p.kill("kill")
    r = p.wait("5s")
    assert (r.status, r.signal, r.exit_code) == ("signalled", 9, -1)
    q = vm.run_async(["sleep", "60"])
    q.signal("SIGTERM")
    assert q.wait("5s").signal == 15
    with pytest.raises(ArgumentError, match="unknown signal name `bogus`"):
        q.kill("bogus")
    with pytest.raises(ArgumentError, match="Process.signal: expected integer or signal name, got nil"):
        q.signal(None)


def test_pid_is_the_real_process(vm):
    p = vm.run_async(["sleep", "30"])
    pid = p.pid()
    assert pid > 0 and pid_alive(pid)
    # /proc/PID/cmdline reads empty for a moment while the new program is mapped in.
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:2]
        if argv == [b"sleep", b"30"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert argv == [b"sleep", b"30"]
    p.kill()
    p.wait("5s")


def test_stdin_write_close_and_streams(vm):
    p = vm.run_async(["cat"])
    out = p.stdout_stream()
    assert vm.open_stream_count() == 1
    assert p.stdin_write("ping\n") == 5
    assert out.read_until("ping\n", 5) == b"ping\n"
    p.write(b"pong\n")
    p.close_stdin()
    assert out.read_until("pong\n", 5) == b"pong\n"
    r = p.wait("5s")
    assert r.ok() and r.stdout == b"ping\npong\n"
    out.close()
    # Keep the Process: dropping one that was never waited sends it SIGTERM, which under
    # load could land before the second echo.
    q = vm.run_async("echo e1 >&2; echo e2 >&2")
    err = q.stderr_stream()
    assert err.read_until("e2\n", 5) == b"e1\ne2\n"  # replayed from the start
    err.close()
    assert q.wait("5s").ok()
    assert vm.open_stream_count() == 0


def test_run_async_stdin_option_is_delivered_then_closed(vm):
    p = vm.run_async("tr a-z A-Z", stdin="quiet")
    assert p.wait("5s").stdout == b"QUIET"


def test_run_async_rejects_timeout_and_missing_binary(vm):
    with pytest.raises(ArgumentError, match="pass it to `Process.wait\\(timeout\\)` instead"):
        vm.run_async("sleep 1", timeout="1s")
    with pytest.raises(GuestOsError) as ei:
        vm.run_async("/nonexistent/binary", {"args": []})
    assert "No such file" in str(ei.value)


def test_dropped_process_is_terminated_and_reaped(vm):
    p = vm.run_async(["sleep", "60"])
    pid = p.pid()
    del p
    gc.collect()
    assert wait_gone(pid), "a dropped Process kept running"
    for _ in range(10):
        vm.run_async(["sleep", "60"])
    gc.collect()
    assert vm.run("echo still fine").stdout == b"still fine\n"


def test_close_terminates_unless_waited(vm):
    p = vm.run_async(["sleep", "60"])
    pid = p.pid()
    p.close()
    assert not pid_alive(pid)
    p.close()
    assert p.status() == "exited"


def test_interrupting_a_blocked_run_stops_the_command(vm, tmp_path):
    import threading

    from provium.host.errors import Interrupted

    pidfile = tmp_path / "pid"
    errors = []

    def blocked():
        try:
            vm.run(f"echo $$ > {pidfile}; exec sleep 30")
        except Interrupted as exc:
            errors.append(str(exc))

    t = threading.Thread(target=blocked)
    t.start()
    deadline = time.monotonic() + 5
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert vm.session.interrupt("test timed out") == 1
    t.join(5)
    assert errors == ["interrupted: test timed out"]
    assert wait_gone(pid), "the agent kept running a command nobody waits for"
    assert vm.run("echo ok").stdout == b"ok\n"


def test_a_single_program_command_gets_the_signal_itself(vm):
    """`run_async("sleep 100")` ran `sh -c`, so p:kill("int") hit a waiting shell;
    a single program is now exec'd by the shell and gets the signal."""
    p = vm.run_async("sleep 100")
    time.sleep(0.3)
    assert open(f"/proc/{p.pid()}/comm").read().strip() == "sleep"
    p.kill("int")
    r = p.wait("10s")
    assert r.status == "signalled" and r.signal == 2


def test_shell_text_execs_only_simple_programs():
    from provium.host.execargs import shell_text

    assert shell_text("sleep 100") == "exec sleep 100"
    assert shell_text("  /bin/echo a-b c=d ") == "exec /bin/echo a-b c=d"
    for cmd in ("exit 3", "cd /tmp", "FOO=1 env", "echo $HOME", "a | b", "a; b", "a && b", "ls *.c",
                "echo 'x y'", "sleep 1 &", "cat < f", "read x", ". ./env.sh"):
        assert shell_text(cmd) == cmd, cmd

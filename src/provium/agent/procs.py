"""Processes: exec (run to completion) and run_async + wait/kill/stdin/status.

Every child gets its own process group, so a timeout can kill what it started
too (a shell's background jobs, a test server's helpers), and three pipes.
Drain threads copy stdout/stderr into an `OutputBuffer` that keeps everything:
the final `wait` returns the whole output, and a `proc_stream` reader replays it
from byte 0 and then follows it, each reader with its own cursor.
"""

from __future__ import annotations

import os
import threading
import time

from provium.protocol.messages import ExecOk, WrittenOk
from provium.protocol.types import ExitStatus, OpResult, ProcessLiveStatus

from . import reaper, workers
from .base import UNKNOWN_HANDLE, AgentFail, os_fail

WAIT_SLICE = 0.1  # how often a blocked wait looks at its deadline / cancellation
DRAIN_GRACE = 1.0  # after a kill, how long to wait for the pipes to empty
SIGKILL = 9  # the same on every Linux architecture; spares importing `signal`
EBADF = 9
EINVAL = 22
EPIPE = 32


class OutputBuffer:
    """Everything one pipe produced, growing; `done` once the pipe hit EOF."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = False
        self.cond = threading.Condition()

    def append(self, chunk: bytes) -> None:
        with self.cond:
            self.data += chunk
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_done(self, timeout: float | None) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.done, timeout)

    def wait_past(self, pos: int, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.done or len(self.data) > pos, timeout)

    def read(self, pos: int, limit: int) -> bytes:
        with self.cond:
            return bytes(self.data[pos:pos + limit])

    def snapshot(self) -> bytes:
        with self.cond:
            return bytes(self.data)


def _drain(pipe, buf: OutputBuffer) -> None:
    fd = pipe.fileno()
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf.append(chunk)
    except OSError:
        pass
    finally:
        buf.finish()
        try:
            pipe.close()
        except OSError:
            pass


class Proc:
    def __init__(self, popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.out = OutputBuffer()
        self.err = OutputBuffer()
        self.lock = threading.Lock()
        self.stdin_lock = threading.Lock()  # a write blocked on a full pipe must not block kill
        self.stdin = popen.stdin
        self.waiting = False
        for pipe, buf in ((popen.stdout, self.out), (popen.stderr, self.err)):
            threading.Thread(target=_drain, args=(pipe, buf), daemon=True, name=f"drain-{self.pid}").start()

    def killpg(self, sig: int = SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except OSError:
            pass  # the group is already gone

    def close_stdin(self) -> None:
        with self.stdin_lock:
            pipe, self.stdin = self.stdin, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass

    def finish(self, deadline: float | None) -> ExecOk:
        """Wait for the pipes to close and the child to exit; kill the group at the deadline."""
        timed_out = False
        # Pipe EOF wakes us the moment the child is done (a condition, not a poll).
        for buf in (self.out, self.err):
            while not timed_out and not buf.wait_done(_step(deadline)):
                if _past(deadline):
                    timed_out = True
        if not timed_out:
            timed_out = not _reap(self.popen, deadline)
        if timed_out:
            self.killpg()
            self.popen.wait()
            for buf in (self.out, self.err):
                buf.wait_done(DRAIN_GRACE)
        self.close_stdin()
        reaper.unregister(self.pid)
        return ExecOk(status=_status(self.popen, timed_out), stdout=self.out.snapshot(),
                      stderr=self.err.snapshot())

    def destroy(self) -> None:
        if self.popen.returncode is None:
            self.killpg()
            try:
                self.popen.wait(timeout=5)
            except Exception:
                pass
        self.close_stdin()
        reaper.unregister(self.pid)


def spawn(op_name: str, cmd: str, args: list[str], env: dict, env_clear: bool, cwd: str | None):
    """Start `cmd args` in a new process group with three pipes; a Popen or an err OpResult."""
    import subprocess

    full_env = {} if env_clear else dict(os.environ)
    full_env.update(env)
    try:
        with reaper.SPAWN_LOCK:
            popen = subprocess.Popen(
                [cmd, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=full_env, cwd=cwd, process_group=0, close_fds=True,
            )
            reaper.register(popen.pid)
        return popen
    except OSError as exc:
        what = exc.filename if exc.filename is not None else cmd
        if cwd is not None and what == cwd:
            what = f"{cmd} (cwd {cwd})"
        return os_fail(op_name, exc, str(what))
    except (ValueError, TypeError) as exc:  # e.g. a NUL byte in an argument
        return OpResult.failure(EINVAL, f"{op_name}: {cmd}: {exc}")


def exec_(ctx, op):
    popen = spawn("exec", op.cmd, op.args, op.env, op.env_clear, op.cwd)
    if isinstance(popen, OpResult):
        return popen
    deadline = None if op.timeout_ms is None else time.monotonic() + max(0, op.timeout_ms) / 1000
    return OpResult.success(_run_to_end(ctx, popen, op.stdin, deadline))


def _step(deadline: float | None) -> float:
    if deadline is None:
        return WAIT_SLICE
    return max(0.0, min(WAIT_SLICE, deadline - time.monotonic()))


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _reap(popen, deadline: float | None, ctx=None) -> bool:
    """Wait for exit until the deadline (or cancellation); False if it did not exit."""
    import subprocess

    while True:
        try:
            popen.wait(timeout=_step(deadline))
            return True
        except subprocess.TimeoutExpired:
            if _past(deadline) or (ctx is not None and ctx.cancelled):
                return False


def _status(popen, timed_out: bool) -> ExitStatus:
    if timed_out:
        return ExitStatus.timed_out()
    rc = popen.returncode
    return ExitStatus.signalled(-rc) if rc < 0 else ExitStatus.exited(rc)


def _run_to_end(ctx, popen, stdin: bytes, deadline: float | None) -> ExecOk:
    """exec's loop: feed stdin, drain both pipes, enforce the deadline, reap.

    One poll loop on the request's own thread (no helper threads), so a short
    command costs little more than its fork and exec.  A cancelled channel
    kills the group too: nobody is left who could collect this process.
    """
    import select

    def killpg() -> None:
        try:
            os.killpg(popen.pid, SIGKILL)
        except OSError:
            pass

    out, err = bytearray(), bytearray()
    bufs = {popen.stdout.fileno(): out, popen.stderr.fileno(): err}
    poller = select.poll()
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    in_fd = None
    view = memoryview(stdin)
    if stdin:
        in_fd = popen.stdin.fileno()
        os.set_blocking(in_fd, False)
        poller.register(in_fd, select.POLLOUT)
    else:
        popen.stdin.close()
    timed_out = killed = False
    limit = deadline
    try:
        while bufs:
            if limit is not None and time.monotonic() >= limit:
                if killed:
                    break  # a holder outside the group keeps the pipe: stop listening
                killpg()
                killed = timed_out = True
                limit = time.monotonic() + DRAIN_GRACE
                continue
            if ctx.cancelled and not killed:
                killpg()
                killed = True
                limit = time.monotonic() + DRAIN_GRACE
            for fd, _ in poller.poll(int(_step(limit) * 1000) + 1):
                if fd == in_fd:
                    try:
                        view = view[os.write(fd, view[:65536]):]
                    except BlockingIOError:
                        continue
                    except OSError:
                        view = view[:0]  # the child stopped reading; what it got is what it wanted
                    if not view:
                        poller.unregister(fd)
                        popen.stdin.close()
                        in_fd = None
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if chunk:
                    bufs[fd] += chunk
                else:
                    poller.unregister(fd)
                    del bufs[fd]
    finally:
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            try:
                pipe.close()
            except OSError:
                pass
    if not killed and not _reap(popen, deadline, ctx):
        killpg()
        timed_out = _past(deadline)
    popen.wait()
    reaper.unregister(popen.pid)
    return ExecOk(status=_status(popen, timed_out), stdout=bytes(out), stderr=bytes(err))


def run_async(ctx, op):
    popen = spawn("run_async", op.cmd, op.args, op.env, op.env_clear, op.cwd)
    if isinstance(popen, OpResult):
        return popen
    return OpResult.success(ctx.state.add(ctx.state.procs, Proc(popen)))


def unknown_proc(op_name: str, handle: int) -> AgentFail:
    return AgentFail(UNKNOWN_HANDLE,
                     f"{op_name}: unknown process handle proc#{handle} "
                     "(never issued, or already consumed by wait)")


def _proc(ctx, op_name: str, handle: int) -> Proc:
    proc = ctx.state.get(ctx.state.procs, handle)
    if proc is None:
        raise unknown_proc(op_name, handle)
    return proc


def wait(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_wait(ctx, op)
    proc = _proc(ctx, "wait", op.handle)
    with proc.lock:
        if proc.waiting:
            raise AgentFail(UNKNOWN_HANDLE, f"wait: process handle proc#{op.handle} is already being waited on")
        proc.waiting = True
    try:
        deadline = None if op.timeout_ms is None else time.monotonic() + max(0, op.timeout_ms) / 1000
        return OpResult.success(proc.finish(deadline))
    finally:
        ctx.state.pop(ctx.state.procs, op.handle)  # wait is one-shot


def kill(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_proc_op(ctx, "kill", op)
    proc = _proc(ctx, "kill", op.handle)
    with proc.lock:
        if proc.popen.returncode is not None:
            return OpResult.success(None)  # reaped: the pid may be someone else's now
        try:
            os.kill(proc.pid, op.signal)  # the child only, not its group
        except ProcessLookupError:
            pass
        except OSError as exc:
            return os_fail("kill", exc, f"proc#{op.handle} (pid {proc.pid}) with signal {op.signal}")
        except (OverflowError, ValueError):
            return OpResult.failure(EINVAL, f"kill: {op.signal} is not a signal number")
    return OpResult.success(None)


def get_pid(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_proc_op(ctx, "get_pid", op)
    return OpResult.success(_proc(ctx, "get_pid", op.handle).pid)


def proc_stdin_write(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_proc_op(ctx, "proc_stdin_write", op)
    proc = _proc(ctx, "proc_stdin_write", op.handle)
    with proc.stdin_lock:  # held across the write so a concurrent close cannot free the fd
        pipe = proc.stdin
        if pipe is None:
            return OpResult.failure(EBADF, f"proc_stdin_write: proc#{op.handle}: stdin is already closed")
        try:
            return OpResult.success(WrittenOk(os.write(pipe.fileno(), op.data)))
        except OSError as exc:
            return os_fail("proc_stdin_write", exc, f"proc#{op.handle} stdin")


def proc_stdin_close(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_proc_op(ctx, "proc_stdin_close", op)
    _proc(ctx, "proc_stdin_close", op.handle).close_stdin()
    return OpResult.success(None)


def proc_status(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return workers.relay_proc_op(ctx, "proc_status", op)
    proc = ctx.state.get(ctx.state.procs, op.handle)
    if proc is None:
        return OpResult.success(ProcessLiveStatus.UNKNOWN)  # not an error, by design
    running = proc.popen.poll() is None
    return OpResult.success(ProcessLiveStatus.RUNNING if running else ProcessLiveStatus.EXITED)


HANDLERS = {
    "exec": exec_, "run_async": run_async, "wait": wait, "kill": kill, "get_pid": get_pid,
    "proc_stdin_write": proc_stdin_write, "proc_stdin_close": proc_stdin_close,
    "proc_status": proc_status,
}

"""Processes: exec (run to completion) and run_async + wait/kill/stdin/status.

Starting, exit watching and output collection live in `children`.  exec
collects on the request's own thread.  run_async hands the collection to a
pool thread that keeps everything in an `OutputBuffer`: the final `wait`
returns the whole output, and a `proc_stream` reader replays it from byte 0
and then follows it, each reader with its own cursor.
"""

from __future__ import annotations

import os
import threading
import time

from provium.protocol.core import OpResult, WrittenOk
from provium.protocol.ops_procs import ExecOk, ExitStatus, ProcessLiveStatus

from .base import UNKNOWN_HANDLE, AgentFail, os_fail
from .children import EXIT_GRACE_MAX, KILL_GRACE, Child, OutputBuffer, batched, child_env, collect, spawn, unbatched
from .pool import POOL

EBADF = 9
EINVAL = 22


class Proc:
    """A run_async process: its Child, its output so far, and who may touch stdin."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.pid = child.pid
        self.out = OutputBuffer("stdout")
        self.err = OutputBuffer("stderr")
        self.lock = threading.Lock()
        self.stdin_lock = threading.Lock()  # a write blocked on a full pipe must not block kill
        self.waiting = False
        self.collected = threading.Event()
        # The collector's own pidfd: wait may close the child's while it still polls.
        pidfd = os.dup(child.pidfd) if child.pidfd is not None else None
        POOL.submit(self._collect, pidfd)

    def _collect(self, pidfd: int | None) -> None:
        try:
            collect(self.child, self.out, self.err, pidfd=pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)
            self.collected.set()

    def close_stdin(self) -> None:
        with self.stdin_lock:
            fd, self.child.stdin = self.child.stdin, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def finish(self, deadline: float | None) -> ExecOk:
        """Wait for the child to exit (kill the group at the deadline), then for its output."""
        child = self.child
        timed_out = False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not child.wait_exit(left):
            child.killpg()
            timed_out = True
            child.wait_exit(None)
        child.reap()
        # The collector stops at most EXIT_GRACE_MAX after the exit (sooner when
        # the pipes close); the bound only guards against a bug.
        self.collected.wait(EXIT_GRACE_MAX + KILL_GRACE + 5)
        self.close_stdin()
        child.close_pidfd()
        # From the collected chunks, not joined first (see OutputBuffer.value).
        return ExecOk(status=_status(child, timed_out), stdout=self.out.value(),  # type: ignore[arg-type]
                      stderr=self.err.value())  # type: ignore[arg-type]  # a Blob is bytes on the wire

    def destroy(self) -> None:
        child = self.child
        if child.returncode is None:
            child.killpg()
            if child.wait_exit(5):
                child.reap()
        self.close_stdin()


def _start(op_name: str, ctx, cmd: str, args: list[str], env: dict, env_clear: bool,
           cwd: str | None) -> Child | OpResult:
    """Start the command (see children.spawn); a Child, or an err OpResult saying why not."""
    try:
        child = spawn(cmd, args, child_env(env_clear, env), cwd)
    except OSError as exc:
        what = exc.filename if exc.filename is not None else cmd
        if cwd is not None and what == cwd:
            what = f"{cmd} (cwd {cwd})"
        return os_fail(op_name, exc, str(what))
    except (ValueError, TypeError) as exc:  # e.g. a NUL byte in an argument
        return OpResult.failure(EINVAL, f"{op_name}: {cmd}: {exc}")
    ctx.state.track_group(child.pid)
    return child


def _status(child: Child, timed_out: bool) -> ExitStatus:
    if timed_out:
        return ExitStatus.timed_out()
    rc = child.returncode
    assert rc is not None  # only asked of a child that has exited
    return ExitStatus.signalled(-rc) if rc < 0 else ExitStatus.exited(rc)


def exec_(ctx, op):
    child = _start("exec", ctx, op.cmd, op.args, op.env, op.env_clear, op.cwd)
    if isinstance(child, OpResult):
        return child
    deadline = None if op.timeout_ms is None else time.monotonic() + max(0, op.timeout_ms) / 1000
    out, err = OutputBuffer("stdout"), OutputBuffer("stderr")
    batch = batched()  # one wake-up for the exit, not three (see children.batched)
    try:
        # On the request's own thread (no helper threads): a short command costs
        # little more than its start.
        timed_out, killed, exited = collect(child, out, err, pidfd=child.pidfd, feed=op.stdin,
                                            deadline=deadline, ctx=ctx)
        if not exited and not killed:
            # Without a pidfd the pipes closed (or went quiet) but the child may still run.
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not child.wait_exit(left, ctx):
                child.killpg()
                timed_out = deadline is not None and time.monotonic() >= deadline
        child.reap()
    finally:
        if batch:
            unbatched()
        child.close_pidfd()
    # The collected output goes out from its own chunks (nothing appends to them
    # now; a Blob is bytes on the wire).
    return OpResult.success(ExecOk(status=_status(child, timed_out), stdout=out.value(), stderr=err.value()))


def run_async(ctx, op):
    child = _start("run_async", ctx, op.cmd, op.args, op.env, op.env_clear, op.cwd)
    if isinstance(child, OpResult):
        return child
    return OpResult.success(ctx.state.add(ctx.state.procs, Proc(child)))


def unknown_proc(op_name: str, handle: int) -> AgentFail:
    return AgentFail(UNKNOWN_HANDLE,
                     f"{op_name}: unknown process handle proc#{handle} "
                     "(never issued, or already consumed by wait)")


def _workers():
    """The worker module: a worker's process handle exists only once a worker was
    spawned, which imported it (an exec alone does not)."""
    from . import workers

    return workers


def _proc(ctx, op_name: str, handle: int) -> Proc:
    proc = ctx.state.get(ctx.state.procs, handle)
    if proc is None:
        raise unknown_proc(op_name, handle)
    return proc


def wait(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return _workers().relay_wait(ctx, op)
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
        return _workers().relay_proc_op(ctx, "kill", op)
    proc = _proc(ctx, "kill", op.handle)
    try:
        proc.child.kill(op.signal)  # the child only, not its group; a reaped one is left alone
    except ProcessLookupError:
        pass
    except OSError as exc:
        return os_fail("kill", exc, f"proc#{op.handle} (pid {proc.pid}) with signal {op.signal}")
    except (OverflowError, ValueError):
        return OpResult.failure(EINVAL, f"kill: {op.signal} is not a signal number")
    return OpResult.success(None)


def get_pid(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return _workers().relay_proc_op(ctx, "get_pid", op)
    return OpResult.success(_proc(ctx, "get_pid", op.handle).pid)


def proc_stdin_write(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return _workers().relay_proc_op(ctx, "proc_stdin_write", op)
    proc = _proc(ctx, "proc_stdin_write", op.handle)
    with proc.stdin_lock:  # held across the write so a concurrent close cannot free the fd
        fd = proc.child.stdin
        if fd < 0:
            return OpResult.failure(EBADF, f"proc_stdin_write: proc#{op.handle}: stdin is already closed")
        try:
            return OpResult.success(WrittenOk(os.write(fd, op.data)))
        except OSError as exc:
            return os_fail("proc_stdin_write", exc, f"proc#{op.handle} stdin")


def proc_stdin_close(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return _workers().relay_proc_op(ctx, "proc_stdin_close", op)
    _proc(ctx, "proc_stdin_close", op.handle).close_stdin()
    return OpResult.success(None)


def proc_status(ctx, op):
    if op.handle in ctx.state.worker_procs:
        return _workers().relay_proc_op(ctx, "proc_status", op)
    proc = ctx.state.get(ctx.state.procs, op.handle)
    if proc is None:
        return OpResult.success(ProcessLiveStatus.UNKNOWN)  # not an error, by design
    running = not proc.child.exited()
    return OpResult.success(ProcessLiveStatus.RUNNING if running else ProcessLiveStatus.EXITED)


HANDLERS = {
    "exec": exec_, "run_async": run_async, "wait": wait, "kill": kill, "get_pid": get_pid,
    "proc_stdin_write": proc_stdin_write, "proc_stdin_close": proc_stdin_close,
    "proc_status": proc_status,
}

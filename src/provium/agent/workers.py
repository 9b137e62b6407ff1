"""Workers: separate agent processes (own pid, own credentials) the parent relays to.

`spawn_worker` re-executes the agent as `... --worker-fd N` on one end of a
socketpair.  The worker serves the same channel envelopes as the main link but
with no handshake, one thread per request, so the parent can relay several
requests at once (a `wait` on a worker's process does not hold up the others).
Processes a worker starts are filed under parent handles, and the process ops
on those handles are relayed to the worker that owns them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any

from provium.errors import ProtocolError
from provium.protocol.envelope import Envelope
from provium.protocol.framing import CleanEof, FrameError, encode_frame, read_frame_body, unpack
from provium.protocol.messages import (
    JoinOk,
    ProcStatusArgs,
    WorkerSyscallAwaitArgs,
    WorkerSyscallBeginArgs,
)
from provium.protocol.types import AgentErrorKind, OpResult

from . import reaper, syscalls
from .base import BAD_REQUEST, INTERNAL, UNKNOWN_HANDLE, AgentFail, os_fail

STARTUP_TIMEOUT = 60.0  # a Python start inside a TCG guest takes a second or two
JOIN_TIMEOUT = 10.0
EINVAL = 22
EXEC_ENV = "PROVIUM_AGENT_EXEC"


class LinkError(ProtocolError):
    """The link to a worker process broke or carried a bad frame."""


class _Slot:
    __slots__ = ("event", "kind", "data", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.kind: str | None = None
        self.data: Any = None
        self.error: str | None = None


class WorkerLink:
    """The parent's end of one worker: its process and a multiplexed request link."""

    def __init__(self, popen, sock) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.error: str | None = None
        self.startup_error: str | None = None
        self._wlock = threading.Lock()
        self._plock = threading.Lock()
        self._pending: dict[int, _Slot] = {}
        self._next = 1
        self._joined = False
        threading.Thread(target=self._reader, daemon=True, name=f"worker-{self.pid}").start()

    def call(self, kind: str, payload: Any, timeout: float | None = None) -> tuple[str, Any]:
        """Send one request; its reply as (kind, raw data).  Raises LinkError."""
        slot = _Slot()
        with self._plock:
            if self.error is not None:
                raise LinkError(self.error)
            ch = self._next
            self._next += 1
            self._pending[ch] = slot
        frame = encode_frame(Envelope(ch, kind, payload).to_wire())
        try:
            with self._wlock:
                self.sock.sendall(frame)
        except OSError as exc:
            self._fail(f"write: {exc}")
        if not slot.event.wait(timeout):
            with self._plock:
                self._pending.pop(ch, None)
            raise LinkError(f"no reply to `{kind}` within {timeout:g} s")
        if slot.error is not None:
            raise LinkError(slot.error)
        return slot.kind, slot.data

    def _reader(self) -> None:
        rfile = self.sock.makefile("rb", buffering=1 << 16)
        try:
            while True:
                value = unpack(read_frame_body(rfile))
                if not isinstance(value, dict) or not isinstance(value.get("ch"), int):
                    raise LinkError("the worker sent a frame that is not an envelope")
                ch, kind, data = value["ch"], value.get("kind"), value.get("data")
                if ch == 0:
                    # Sent by a worker that could not start serving (e.g. refused credentials).
                    if isinstance(data, dict) and isinstance(data.get("message"), str):
                        self.startup_error = data["message"]
                    continue
                with self._plock:
                    slot = self._pending.pop(ch, None)
                if slot is not None:
                    slot.kind, slot.data = kind, data
                    slot.event.set()
        except FrameError as exc:
            self._fail("the worker closed its end" if isinstance(exc, CleanEof) else str(exc))
        except (OSError, ValueError, LinkError) as exc:
            self._fail(str(exc))
        finally:
            try:
                rfile.close()
            except Exception:
                pass

    def _fail(self, reason: str) -> None:
        with self._plock:
            if self.error is None:
                self.error = reason
            pending = list(self._pending.values())
            self._pending.clear()
        for slot in pending:
            slot.error = self.error
            slot.event.set()

    def join(self) -> int:
        """Close the link (the worker sees EOF and exits), reap it: exit code or 128+signal."""
        import socket
        import subprocess

        self._joined = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            rc = self.popen.wait(timeout=JOIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # it did not leave on EOF: make it
            rc = self.popen.wait()
        reaper.unregister(self.pid)
        try:
            self.sock.close()
        except OSError:
            pass
        return rc if rc >= 0 else 128 - rc


def worker_argv() -> list[str]:
    """How to start another agent: $PROVIUM_AGENT_EXEC (a JSON argv prefix) or this Python."""
    raw = os.environ.get(EXEC_ENV)
    if raw:
        import json

        try:
            argv = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"${EXEC_ENV} is not JSON ({exc})") from exc
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ValueError(f"${EXEC_ENV} must be a JSON array of strings naming the agent command")
        return argv
    return [sys.executable, "-m", "provium.agent"]


def _check_id(name: str, value: Any) -> None:
    if value is not None and not 0 <= value < (1 << 32) - 1:
        raise AgentFail(BAD_REQUEST, f"spawn_worker: {name} {value} is not a valid id (0..4294967294)")


def spawn_worker(ctx, op):
    import socket
    import subprocess

    _check_id("uid", op.uid)
    _check_id("gid", op.gid)
    for g in op.groups or []:
        _check_id("group", g)
    try:
        argv = worker_argv()
    except ValueError as exc:
        return OpResult.failure(EINVAL, f"spawn_worker: {exc}")
    try:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # both close-on-exec
    except OSError as exc:
        return os_fail("spawn_worker", exc, "socketpair")
    cmd = argv + ["--worker-fd", str(child.fileno())]
    if op.uid is not None:
        cmd += ["--uid", str(op.uid)]
    if op.gid is not None:
        cmd += ["--gid", str(op.gid)]
    if op.groups is not None:
        cmd += ["--groups", ",".join(str(g) for g in op.groups)]
    if ctx.state.local:
        cmd.append("--local")
    try:
        with reaper.SPAWN_LOCK:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     pass_fds=(child.fileno(),), close_fds=True)
            reaper.register(popen.pid)
    except OSError as exc:
        parent.close()
        return os_fail("spawn_worker", exc, argv[0])
    finally:
        child.close()
    link = WorkerLink(popen, parent)
    # One round trip proves it is up and took its credentials before we hand out a handle.
    try:
        link.call(ProcStatusArgs.KIND, ProcStatusArgs(0), timeout=STARTUP_TIMEOUT)
    except LinkError as exc:
        status = link.join()
        detail = link.startup_error or f"it exited with status {status} before serving ({exc})"
        return OpResult.failure(status if 0 < status < 128 else 0, f"spawn_worker: {detail}")
    return OpResult.success(ctx.state.add(ctx.state.workers, link))


# ---- relaying ---------------------------------------------------------------------


def _link(ctx, op_name: str, handle: int) -> WorkerLink:
    link = ctx.state.get(ctx.state.workers, handle)
    if link is None:
        raise AgentFail(UNKNOWN_HANDLE, f"{op_name} on unknown worker worker#{handle}")
    return link


def _relay(op_name: str, link: WorkerLink, kind: str, payload: Any, expect: str) -> Any:
    try:
        rkind, data = link.call(kind, payload)
    except LinkError as exc:
        raise AgentFail(BAD_REQUEST, f"{op_name}: worker control channel error: {exc}") from exc
    if rkind == "agent_error":
        raise _as_fail(op_name, data)
    if rkind != expect:
        raise AgentFail(BAD_REQUEST, f"{op_name}: the worker answered `{rkind}` instead of `{expect}`")
    return data  # already in wire form: passed through as is


def _as_fail(op_name: str, data: Any) -> AgentFail:
    if isinstance(data, dict):
        try:
            return AgentFail(AgentErrorKind(data.get("kind")), str(data.get("message")))
        except ValueError:
            pass
    return AgentFail(INTERNAL, f"{op_name}: the worker sent a malformed agent_error: {data!r}")


def worker_exec(ctx, op):
    link = _link(ctx, "worker_exec", op.handle)
    return _relay("worker_exec", link, "exec", op.exec, "exec_result")


def worker_syscall(ctx, op):
    link = _link(ctx, "worker_syscall", op.handle)
    return _relay("worker_syscall", link, "syscall", op.args, "syscall_result")


def worker_syscall_begin(ctx, op):
    if op.handle == 0:  # 0 = this process (how a parent's relay reaches its worker)
        return syscalls.begin_local(ctx, op.args)
    link = _link(ctx, "worker_syscall_begin", op.handle)
    return _relay("worker_syscall_begin", link, "worker_syscall_begin",
                  WorkerSyscallBeginArgs(0, op.args), "worker_syscall_begin_result")


def worker_syscall_await(ctx, op):
    if op.handle == 0:
        return syscalls.await_local(ctx, op.async_id)
    link = _link(ctx, "worker_syscall_await", op.handle)
    return _relay("worker_syscall_await", link, "worker_syscall_await",
                  WorkerSyscallAwaitArgs(0, op.async_id), "worker_syscall_await_result")


def worker_run_async(ctx, op):
    link = _link(ctx, "worker_run_async", op.handle)
    data = _relay("worker_run_async", link, "run_async", op.args, "run_async_result")
    if isinstance(data, dict) and data.get("outcome") == "ok" and isinstance(data.get("value"), int):
        outer = ctx.state.add(ctx.state.worker_procs, (op.handle, data["value"]))
        return {"outcome": "ok", "value": outer}
    return data


def worker_open_file(ctx, op):
    _link(ctx, "worker_open_file", op.handle)
    raise AgentFail(BAD_REQUEST,
                    f"worker_open_file: a worker is a separate process whose file table the parent "
                    f"cannot reach; open {op.args.path!r} inside the worker with "
                    "worker:syscall(openat, ...), or with open_file when the credentials do not matter")


def worker_kill(ctx, op):
    link = _link(ctx, "worker_kill", op.handle)
    if link.popen.returncode is not None:
        return OpResult.success(0)
    try:
        os.kill(link.pid, op.signal)
    except ProcessLookupError:
        return OpResult.success(0)
    except OSError as exc:
        return os_fail("worker_kill", exc, f"worker#{op.handle} (pid {link.pid})")
    except (OverflowError, ValueError):
        return OpResult.failure(EINVAL, f"worker_kill: {op.signal} is not a signal number")
    return OpResult.success(1)


def worker_join(ctx, op):
    link = ctx.state.pop(ctx.state.workers, op.handle)
    if link is None:
        raise AgentFail(UNKNOWN_HANDLE, f"worker_join on unknown worker worker#{op.handle}")
    with ctx.state.lock:  # its processes go with it
        for outer in [h for h, (w, _) in ctx.state.worker_procs.items() if w == op.handle]:
            del ctx.state.worker_procs[outer]
    return OpResult.success(JoinOk(exit_status=link.join()))


def _mapped(ctx, op_name: str, handle: int) -> tuple[WorkerLink, int]:
    with ctx.state.lock:
        entry = ctx.state.worker_procs.get(handle)
    if entry is None:
        raise AgentFail(UNKNOWN_HANDLE, f"{op_name}: unknown process handle proc#{handle}")
    worker, inner = entry
    link = ctx.state.get(ctx.state.workers, worker)
    if link is None:
        raise AgentFail(UNKNOWN_HANDLE,
                        f"{op_name}: proc#{handle} was started by worker#{worker}, which has been joined")
    return link, inner


def relay_proc_op(ctx, op_name: str, op):
    link, inner = _mapped(ctx, op_name, op.handle)
    return _relay(op_name, link, op.KIND, dataclasses.replace(op, handle=inner), op.REPLY[0])


def relay_wait(ctx, op):
    link, inner = _mapped(ctx, "wait", op.handle)
    try:
        return _relay("wait", link, op.KIND, dataclasses.replace(op, handle=inner), op.REPLY[0])
    finally:
        ctx.state.pop(ctx.state.worker_procs, op.handle)  # consumed on both sides


HANDLERS = {
    "spawn_worker": spawn_worker, "worker_exec": worker_exec, "worker_syscall": worker_syscall,
    "worker_syscall_begin": worker_syscall_begin, "worker_syscall_await": worker_syscall_await,
    "worker_run_async": worker_run_async, "worker_open_file": worker_open_file,
    "worker_kill": worker_kill, "worker_join": worker_join,
}

"""Workers: separate agent processes (own pid, own credentials) the parent relays to.

`spawn_worker` re-executes the agent as `... --worker-fd N` on one end of a
socketpair.  The worker serves the same channel envelopes as the main link but
with no handshake, one thread per request, so the parent can relay several
requests at once (a `wait` on a worker's process does not hold up the others).
Processes a worker starts are filed under parent handles, and the process ops
on those handles (streams included) are relayed to the worker that owns them.

A file opened through a worker is opened BY the worker, so the permission
check is the worker's; it hands the descriptor over the link (SCM_RIGHTS) and
the parent files it as an ordinary handle.  The link is therefore read with
recvmsg: descriptors arrive in frame order, and a reply envelope says with an
`fds` count how many of them are its own.
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
from provium.protocol.core import AgentErrorKind, OpResult
from provium.protocol.ops_procs import KillArgs, ProcStatusArgs, WaitArgs
from provium.protocol.ops_workers import JoinOk, WorkerOpenFileArgs, WorkerSyscallAwaitArgs, WorkerSyscallBeginArgs

from . import reaper, syscalls
from .children import unprotect
from .base import BAD_REQUEST, INTERNAL, UNKNOWN_HANDLE, AgentFail, WithFds, os_fail

STARTUP_TIMEOUT = 60.0  # a Python start inside a TCG guest takes a second or two
JOIN_TIMEOUT = 10.0
EINVAL = 22
EXEC_ENV = "PROVIUM_AGENT_EXEC"


class LinkError(ProtocolError):
    """The link to a worker process broke or carried a bad frame."""


class _Slot:
    __slots__ = ("event", "kind", "data", "error", "fds")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.kind: str | None = None
        self.data: Any = None
        self.error: str | None = None
        self.fds: list[int] = []

    def deliver(self, kind: str, data: Any, fds: list[int]) -> bool:
        """Take the reply; False when the reply ends nothing (never for a call)."""
        self.kind, self.data, self.fds = kind, data, fds
        self.event.set()
        return True

    def fail(self, reason: str) -> None:
        self.error = reason
        self.event.set()


class _StreamSlot:
    """A relayed stream's channel: every message on it, in order, until it ends."""

    def __init__(self) -> None:
        import queue

        self.queue: Any = queue.Queue()

    def deliver(self, kind: str, data: Any, fds: list[int]) -> bool:
        for fd in fds:  # never expected on a stream
            os.close(fd)
        self.queue.put((kind, data))
        return kind != "stream_frame" and not kind.endswith("_result")  # still open after the ack

    def fail(self, reason: str) -> None:
        self.queue.put(("link_error", reason))


class _FdReader:
    """A byte stream over the link socket that keeps descriptors sent along (FIFO)."""

    MAX_FDS = 16

    def __init__(self, sock) -> None:
        self.sock = sock
        self.fds: list[int] = []
        self._buf = b""

    def read(self, n: int) -> bytes:
        import socket

        if not self._buf:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, self.MAX_FDS)
            self.fds.extend(fds)
            self._buf = data
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def take(self, n: int) -> list[int]:
        got, self.fds = self.fds[:n], self.fds[n:]
        return got

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


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
        self._pending: dict[int, Any] = {}  # channel -> _Slot | _StreamSlot
        self._next = 1
        self._joined = False
        self.files: set[int] = set()  # parent file handles opened through this worker
        threading.Thread(target=self._reader, daemon=True, name=f"worker-{self.pid}").start()

    def _open_channel(self, slot: Any) -> int:
        with self._plock:
            if self.error is not None:
                raise LinkError(self.error)
            ch = self._next
            self._next += 1
            self._pending[ch] = slot
            return ch

    def send(self, ch: int, kind: str, payload: Any) -> None:
        frame = encode_frame(Envelope(ch, kind, payload).to_wire())
        try:
            with self._wlock:
                self.sock.sendall(frame)
        except OSError as exc:
            self._fail(f"write: {exc}")

    def call(self, kind: str, payload: Any, timeout: float | None = None) -> tuple[str, Any]:
        """Send one request; its reply as (kind, raw data).  Raises LinkError."""
        kind, data, fds = self.call_fds(kind, payload, timeout)
        for fd in fds:
            os.close(fd)
        return kind, data

    def call_fds(self, kind: str, payload: Any, timeout: float | None = None) -> tuple[str, Any, list[int]]:
        """`call`, plus the descriptors the reply carried (the caller owns them)."""
        slot = _Slot()
        ch = self._open_channel(slot)
        self.send(ch, kind, payload)
        if not slot.event.wait(timeout):
            with self._plock:
                self._pending.pop(ch, None)
            raise LinkError(f"no reply to `{kind}` within {timeout:g} s")
        if slot.error is not None:
            raise LinkError(slot.error)
        return slot.kind or "", slot.data, slot.fds

    def open_stream(self, kind: str, payload: Any) -> tuple[int, Any]:
        """Start a stream op in the worker: (channel, slot whose queue gets the ack, frames, end)."""
        slot = _StreamSlot()
        ch = self._open_channel(slot)
        self.send(ch, kind, payload)
        return ch, slot

    def close_stream(self, ch: int) -> None:
        """Stop listening to a relayed stream: the worker stops it too."""
        with self._plock:
            known = self._pending.pop(ch, None) is not None
        if known:
            self.send(ch, "cancel", None)

    def _reader(self) -> None:
        rfile = _FdReader(self.sock)
        try:
            while True:
                value = unpack(read_frame_body(rfile))  # type: ignore[arg-type]  # a file-like reader
                if not isinstance(value, dict) or not isinstance(value.get("ch"), int):
                    raise LinkError("the worker sent a frame that is not an envelope")
                ch, kind, data = value["ch"], value.get("kind"), value.get("data")
                nfds = value.get("fds", 0)
                fds = rfile.take(nfds) if isinstance(nfds, int) and nfds > 0 else []
                if ch == 0:
                    # Sent by a worker that could not start serving (e.g. refused credentials).
                    if isinstance(data, dict) and isinstance(data.get("message"), str):
                        self.startup_error = data["message"]
                    continue
                with self._plock:
                    slot = self._pending.get(ch)
                if slot is None or not isinstance(kind, str):
                    for fd in fds:  # nobody waits for them any more
                        os.close(fd)
                    continue
                if slot.deliver(kind, data, fds):
                    with self._plock:
                        if self._pending.get(ch) is slot:
                            del self._pending[ch]
        except FrameError as exc:
            self._fail("the worker closed its end" if isinstance(exc, CleanEof) else str(exc))
        except (OSError, ValueError, LinkError) as exc:
            self._fail(str(exc))
        finally:
            rfile.close()

    def _fail(self, reason: str) -> None:
        with self._plock:
            if self.error is None:
                self.error = reason
            pending = list(self._pending.values())
            self._pending.clear()
        for slot in pending:
            slot.fail(self.error)

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
        unprotect(popen.pid)  # a worker is the user's process: the OOM killer may pick it
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
    if op.handle == 0:  # in the worker: open with our credentials, hand the descriptor over
        from .files import open_flags

        flags = open_flags(op.args.mode)
        if isinstance(flags, str):
            return OpResult.failure(EINVAL, f"open_file: {op.args.path}: {flags}")
        perm = 0o644 if op.args.create_perm is None else op.args.create_perm & 0o7777
        try:
            fd = os.open(op.args.path, flags, perm)
        except OSError as exc:  # say whose permissions were checked
            return os_fail(f"worker open_file (uid {os.geteuid()}, gid {os.getegid()})", exc, op.args.path)
        return WithFds(OpResult.success(0), [fd])
    link = _link(ctx, "worker_open_file", op.handle)
    try:
        kind, data, fds = link.call_fds("worker_open_file", WorkerOpenFileArgs(0, op.args))
    except LinkError as exc:
        raise AgentFail(BAD_REQUEST, f"worker_open_file: worker control channel error: {exc}") from None
    if kind == "agent_error":
        raise _as_fail("worker_open_file", data)
    ok = kind == "worker_open_file_result" and isinstance(data, dict) and data.get("outcome") == "ok"
    if not ok or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        if kind == "worker_open_file_result" and isinstance(data, dict) and data.get("outcome") == "err":
            return data  # the worker's OS error, as it sent it
        raise AgentFail(INTERNAL, f"worker_open_file: the worker answered `{kind}` with {len(fds)} "
                                  "descriptors instead of one open file")
    from .state import FileEntry

    handle = ctx.state.add(ctx.state.files, FileEntry(fds[0], op.args.path))
    with ctx.state.lock:
        link.files.add(handle)
    return OpResult.success(handle)


def _procs_of(ctx, worker: int) -> list[int]:
    with ctx.state.lock:
        return [h for h, (w, _) in ctx.state.worker_procs.items() if w == worker]


def worker_kill(ctx, op):
    """Signal every process the worker started that was not waited on yet; how many."""
    link = _link(ctx, "worker_kill", op.handle)
    if not 0 <= op.signal < 65:
        return OpResult.failure(EINVAL, f"worker_kill: {op.signal} is not a signal number")
    n = 0
    for outer in _procs_of(ctx, op.handle):
        with ctx.state.lock:
            entry = ctx.state.worker_procs.get(outer)
        if entry is None:
            continue  # waited on meanwhile
        try:
            kind, data = link.call("kill", KillArgs(entry[1], op.signal))
        except LinkError as exc:
            raise AgentFail(BAD_REQUEST, f"worker_kill: worker control channel error: {exc}") from None
        if kind == "kill_result" and isinstance(data, dict) and data.get("outcome") == "ok":
            n += 1
    return OpResult.success(n)


def _status_code(data: Any) -> int:
    """A relayed wait's ExecOk (wire form) as one number: code, or 128 + signal (timed out: SIGKILL)."""
    status = data.get("value", {}).get("status", {}) if isinstance(data, dict) else {}
    kind, value = status.get("kind"), status.get("value")
    if kind == "exited" and isinstance(value, int):
        return value & 0xFF
    if kind == "signalled" and isinstance(value, int):
        return 128 + value
    return 128 + 9


def worker_join(ctx, op):
    """Reap the worker's processes (worst status wins), close its files, end it."""
    import time

    link = _link(ctx, "worker_join", op.handle)
    deadline = None if op.timeout_ms is None else time.monotonic() + max(0, op.timeout_ms) / 1000
    worst = 0
    for outer in _procs_of(ctx, op.handle):
        entry = ctx.state.pop(ctx.state.worker_procs, outer)
        if entry is None:
            continue  # waited on meanwhile
        left = None if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
        try:
            kind, data = link.call("wait", WaitArgs(entry[1], left))
        except LinkError:
            break  # the worker is gone, and its processes with it
        if kind == "wait_result" and isinstance(data, dict) and data.get("outcome") == "ok":
            worst = max(worst, _status_code(data))
    if ctx.state.pop(ctx.state.workers, op.handle) is None:
        raise AgentFail(UNKNOWN_HANDLE, f"worker_join on unknown worker worker#{op.handle}")
    with ctx.state.lock:  # whatever is left goes with it
        for outer in [h for h, (w, _) in ctx.state.worker_procs.items() if w == op.handle]:
            del ctx.state.worker_procs[outer]
        files = [ctx.state.files.pop(h) for h in link.files if h in ctx.state.files]
        link.files.clear()
    for entry in files:
        try:
            os.close(entry.fd)
        except OSError:
            pass
    return OpResult.success(JoinOk(exit_status=max(worst, link.join())))


def open_proc_stream(ctx, op):
    """proc_stream on a worker's process: the worker streams it, we pass the frames on."""
    from provium.protocol.envelope import decode_agent
    from provium.protocol.core import OsError
    from provium.protocol.ops_control import Credit
    from provium.protocol.ops_streams import StreamEnd

    link, inner = _mapped(ctx, "proc_stream", op.handle)
    try:
        ch, slot = link.open_stream("proc_stream", dataclasses.replace(op, handle=inner))
    except LinkError as exc:
        raise AgentFail(BAD_REQUEST, f"proc_stream: worker control channel error: {exc}") from None
    kind, data = slot.queue.get()
    if kind == "link_error":
        raise AgentFail(BAD_REQUEST, f"proc_stream: worker control channel error: {data}")
    if kind == "agent_error":
        raise _as_fail("proc_stream", data)
    ack = decode_agent({"ch": ch, "kind": kind, "data": data}).data
    if not ack.ok:
        link.close_stream(ch)
        return ack, None

    def pump(out) -> None:
        import queue

        try:
            while True:
                try:
                    kind, data = slot.queue.get(timeout=0.1)
                except queue.Empty:
                    if out.cancelled:
                        return
                    continue
                if kind == "stream_frame":
                    view = memoryview(data.get("data", b"") if isinstance(data, dict) else b"")
                    size = len(view)
                    while view:
                        n = out.reserve(len(view))
                        if n == 0 or not out.frame(bytes(view[:n])):
                            return
                        view = view[n:]
                    link.send(ch, "credit", Credit(size))
                elif kind == "stream_end":
                    out.end(decode_agent({"ch": ch, "kind": kind, "data": data}).data)
                    return
                else:
                    reason = data if kind == "link_error" else f"the worker sent `{kind}`"
                    out.end(StreamEnd("error", OsError(0, f"proc_stream: proc#{op.handle}: {reason}")))
                    return
        finally:
            link.close_stream(ch)

    return ack, pump


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

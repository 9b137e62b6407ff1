"""Wire types of the worker ops: a worker is a second agent with other credentials
that runs ops for the host (imported on the first such op, see kinds.py)."""

from dataclasses import dataclass

from .codec import ANY
from .core import OpResult
from .ops_files import OpenFileArgs
from .ops_procs import ExecArgs, ExecOk, RunAsyncArgs
from .ops_syscalls import SyscallArgs, SyscallResult

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


@dataclass
class JoinOk:
    """The worst exit status among a joined worker's processes and itself (128 + N for signal N)."""

    exit_status: int


@dataclass
class SpawnWorkerArgs:
    """Credentials are our addition: the reference's guest applies them itself."""

    KIND = "spawn_worker"
    REPLY = ("spawn_worker_result", OpResult.of(int))
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None


@dataclass
class WorkerExecArgs:
    """exec inside a worker."""

    KIND = "worker_exec"
    REPLY = ("worker_exec_result", OpResult.of(ExecOk))
    handle: int
    exec: ExecArgs


@dataclass
class WorkerRunAsyncArgs:
    """run_async inside a worker."""

    KIND = "worker_run_async"
    REPLY = ("worker_run_async_result", OpResult.of(int))
    handle: int
    args: RunAsyncArgs


@dataclass
class WorkerOpenFileArgs:
    """open_file with a worker's credentials: the worker opens, the parent files the descriptor."""

    KIND = "worker_open_file"
    REPLY = ("worker_open_file_result", OpResult.of(int))
    handle: int
    args: OpenFileArgs


@dataclass
class WorkerSyscallArgs:
    """A raw system call inside a worker."""

    KIND = "worker_syscall"
    REPLY = ("worker_syscall_result", SyscallResult)
    handle: int
    args: SyscallArgs


@dataclass
class WorkerSyscallBeginArgs:
    """Start a raw system call inside a worker without waiting for it."""

    KIND = "worker_syscall_begin"
    REPLY = ("worker_syscall_begin_result", OpResult.of(int))
    handle: int
    args: SyscallArgs


@dataclass
class WorkerSyscallAwaitArgs:
    """The result of a system call started with worker_syscall_begin."""

    KIND = "worker_syscall_await"
    REPLY = ("worker_syscall_await_result", SyscallResult)
    handle: int
    async_id: int


@dataclass
class WorkerKillArgs:
    """Send a signal to every process the worker started (not yet waited on); how many."""

    KIND = "worker_kill"
    REPLY = ("worker_kill_result", OpResult.of(int))
    handle: int
    signal: int = 15


@dataclass
class WorkerJoinArgs:
    """End a worker: reap its processes (SIGKILLed after `timeout_ms`, if given),
    close the files it opened, end it; the worst exit status of all of them."""

    KIND = "worker_join"
    REPLY = ("worker_join_result", OpResult.of(JoinOk))
    handle: int
    timeout_ms: int | None = None


OPS: "list[Any]" = [SpawnWorkerArgs, WorkerExecArgs, WorkerRunAsyncArgs, WorkerOpenFileArgs, WorkerSyscallArgs,
                    WorkerSyscallBeginArgs, WorkerSyscallAwaitArgs, WorkerKillArgs, WorkerJoinArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

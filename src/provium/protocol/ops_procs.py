"""Wire types of the process ops: exec, run_async and what acts on a process handle
(wait, kill, get_pid, stdin, status); imported on the first such op, see kinds.py."""

import enum
from dataclasses import dataclass, field

from .codec import ANY
from .core import OpResult, WrittenOk, _decode_tagged, _Tagged

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


class ProcessLiveStatus(str, enum.Enum):
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ExitStatus(_Tagged):
    """How a process ended: exited(code), signalled(signo) or timed_out."""

    kind: str  # exited | signalled | timed_out
    value: int | None = None

    TAGS = {"exited": int, "signalled": int, "timed_out": None}

    @classmethod
    def exited(cls, code: int) -> "ExitStatus":
        return cls("exited", code)

    @classmethod
    def signalled(cls, sig: int) -> "ExitStatus":
        return cls("signalled", sig)

    @classmethod
    def timed_out(cls) -> "ExitStatus":
        return cls("timed_out")

    def __wire_encode__(self) -> dict:
        return {"kind": self.kind} if self.TAGS[self.kind] is None else {"kind": self.kind, "value": self.value}

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "ExitStatus":
        return _decode_tagged(cls, value, where)


@dataclass
class ExecOk:
    """What a finished process left: its status and everything it wrote."""

    status: ExitStatus
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class ExecArgs:
    """Run a command to completion and collect its output."""

    KIND = "exec"
    REPLY = ("exec_result", OpResult.of(ExecOk))
    cmd: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_clear: bool = False
    stdin: bytes = b""
    cwd: str | None = None
    timeout_ms: int | None = None


@dataclass
class RunAsyncArgs:
    """Start a command and hand back a process handle."""

    KIND = "run_async"
    REPLY = ("run_async_result", OpResult.of(int))
    cmd: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_clear: bool = False
    cwd: str | None = None


@dataclass
class WaitArgs:
    """Wait for a process to end and collect its output (consumes the handle)."""

    KIND = "wait"
    REPLY = ("wait_result", OpResult.of(ExecOk))
    handle: int
    timeout_ms: int | None = None


@dataclass
class KillArgs:
    """Send a signal to a process (not its group)."""

    KIND = "kill"
    REPLY = ("kill_result", OpResult.of(type(None)))
    handle: int
    signal: int = 15


@dataclass
class GetPidArgs:
    """A process handle's pid."""

    KIND = "get_pid"
    REPLY = ("get_pid_result", OpResult.of(int))
    handle: int


@dataclass
class ProcStdinWriteArgs:
    """Write to a process's stdin."""

    KIND = "proc_stdin_write"
    REPLY = ("proc_stdin_write_result", OpResult.of(WrittenOk))
    handle: int
    data: bytes


@dataclass
class ProcStdinCloseArgs:
    """Close a process's stdin."""

    KIND = "proc_stdin_close"
    REPLY = ("proc_stdin_close_result", OpResult.of(type(None)))
    handle: int


@dataclass
class ProcStatusArgs:
    """Whether a process still runs."""

    KIND = "proc_status"
    REPLY = ("proc_status_result", OpResult.of(ProcessLiveStatus))
    handle: int


OPS: "list[Any]" = [ExecArgs, RunAsyncArgs, WaitArgs, KillArgs, GetPidArgs, ProcStdinWriteArgs,
                    ProcStdinCloseArgs, ProcStatusArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

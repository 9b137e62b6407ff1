"""Every host->agent op and agent->host reply, as dataclasses.

Field names and kinds follow the reference's wire (`spec/reference-design.md`
§11).  Each op class names its `KIND` and the `REPLY` kind and payload type
the agent answers with.  `Message` is the `{kind, data}` envelope; the channel
multiplexer (`envelope.py`) adds the channel number around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import WireError, decode, encode, omit_empty, wire_name
from .types import (
    AgentError,
    AgentInfo,
    DirEntry,
    ExitStatus,
    FileMetadata,
    NestedPtr,
    OpenMode,
    OpResult,
    ProcessLiveStatus,
    ProcStreamChannel,
    SeekWhence,
    StreamEnd,
    TailStart,
    WriteFileMode,
)

PROTOCOL_VERSION = 1

# `KIND`, `REPLY` and `STREAM` are plain class attributes, not `ClassVar`
# annotations: dataclasses recognises a string `ClassVar[...]` only when
# `typing` is already imported, and the agent does not import it (it is a
# noticeable part of its start inside a slow guest).  An annotated constant
# would silently become a field there.  tests/unit/test_agent_startup.py checks.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# ---- payloads of successful results -------------------------------------------------


@dataclass
class ExecOk:
    """What a finished process left: its status and everything it wrote."""

    status: ExitStatus
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class DataOk:
    """Bytes read."""

    data: bytes


@dataclass
class WrittenOk:
    """How many bytes one write(2) took."""

    written: int


@dataclass
class TimeOk:
    """CLOCK_REALTIME in nanoseconds since the epoch."""

    ns: int


@dataclass
class IoctlOk:
    """An ioctl's return value and its buffers afterwards."""

    ret: int
    out_data: bytes
    out_bufs: list[bytes] = field(default_factory=list)


@dataclass
class ReadMemOk:
    """Bytes read from the agent's own memory."""

    bytes: bytes


@dataclass
class JoinOk:
    """The worst exit status among a joined worker's processes and itself (128 + N for signal N)."""

    exit_status: int


@dataclass
class SyscallResult:
    """A raw system call's return value, its errno when negative, and its buffers afterwards."""

    ret: int
    errno: int = 0
    out_bufs: list[bytes] = omit_empty(default_factory=list)


# ---- handshake ----------------------------------------------------------------------


@dataclass
class Hello:
    """Host -> agent on channel 0: start (or restart) a conversation."""

    KIND = "hello"
    protocol_version: int = PROTOCOL_VERSION


@dataclass
class HelloOk:
    """Agent -> host: the handshake succeeded; who the agent is."""

    KIND = "hello_ok"
    protocol_version: int
    agent: AgentInfo


@dataclass
class HelloErr:
    """Agent -> host: the protocol versions differ."""

    KIND = "hello_err"
    host_version: int
    agent_version: int


# ---- ops ------------------------------------------------------------------------------


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
class OpenFileArgs:
    """Open a file and hand back a file handle."""

    KIND = "open_file"
    REPLY = ("open_file_result", OpResult.of(int))
    path: str
    mode: OpenMode = field(default_factory=OpenMode)
    create_perm: int | None = None


@dataclass
class ReadArgs:
    """Read from an open file handle."""

    KIND = "read"
    REPLY = ("read_result", OpResult.of(DataOk))
    handle: int
    max_bytes: int


@dataclass
class WriteArgs:
    """Write to an open file handle (one write(2))."""

    KIND = "write"
    REPLY = ("write_result", OpResult.of(WrittenOk))
    handle: int
    data: bytes


@dataclass
class CloseArgs:
    """Close a file handle."""

    KIND = "close"
    REPLY = ("close_result", OpResult.of(type(None)))
    handle: int


@dataclass
class ReadFileArgs:
    """Read a whole file."""

    KIND = "read_file"
    REPLY = ("read_file_result", OpResult.of(DataOk))
    path: str


@dataclass
class WriteFileArgs:
    """Write a whole file (replace, append or create exclusively)."""

    KIND = "write_file"
    REPLY = ("write_file_result", OpResult.of(type(None)))
    path: str
    data: bytes
    mode: WriteFileMode = WriteFileMode.REPLACE
    create_perm: int | None = None


@dataclass
class StatArgs:
    """Metadata of a path."""

    KIND = "stat"
    REPLY = ("stat_result", OpResult.of(FileMetadata))
    path: str
    follow_symlinks: bool = True


@dataclass
class ListdirArgs:
    """The entries of a directory."""

    KIND = "listdir"
    REPLY = ("listdir_result", OpResult.of(list[DirEntry]))
    path: str


@dataclass
class MkdirArgs:
    """Create a directory (and its parents, if asked)."""

    KIND = "mkdir"
    REPLY = ("mkdir_result", OpResult.of(type(None)))
    path: str
    parents: bool = False
    create_perm: int | None = None


@dataclass
class UnlinkArgs:
    """Remove a file or an empty directory."""

    KIND = "unlink"
    REPLY = ("unlink_result", OpResult.of(type(None)))
    path: str


@dataclass
class RenameArgs:
    """Rename a path."""

    KIND = "rename"
    REPLY = ("rename_result", OpResult.of(type(None)))
    from_: str = wire_name("from")
    to: str = ""


@dataclass
class SeekArgs:
    """Move an open file handle's position."""

    KIND = "seek"
    REPLY = ("seek_result", OpResult.of(int))
    handle: int
    offset: int
    whence: SeekWhence = SeekWhence.SET


@dataclass
class TailFileArgs:
    """Stream a file's bytes from a start position, then what is appended."""

    KIND = "tail_file"
    REPLY = ("tail_file_result", OpResult.of(type(None)))
    STREAM = True
    path: str
    start: TailStart = field(default_factory=TailStart)


@dataclass
class FdStreamArgs:
    """Stream what can be read through an open file handle."""

    KIND = "fd_stream"
    REPLY = ("fd_stream_result", OpResult.of(type(None)))
    STREAM = True
    handle: int


@dataclass
class ProcStreamArgs:
    """Stream a process's stdout or stderr from its first byte."""

    KIND = "proc_stream"
    REPLY = ("proc_stream_result", OpResult.of(type(None)))
    STREAM = True
    handle: int
    channel: ProcStreamChannel = ProcStreamChannel.STDOUT


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


@dataclass
class GetTimeArgs:
    """Read the guest's wall clock."""

    KIND = "get_time"
    REPLY = ("get_time_result", OpResult.of(TimeOk))


@dataclass
class SetTimeArgs:
    """Set the guest's wall clock."""

    KIND = "set_time"
    REPLY = ("set_time_result", OpResult.of(type(None)))
    ns: int


@dataclass
class SleepClockArgs:
    """Answer after this many nanoseconds."""

    KIND = "sleep_clock"
    REPLY = ("sleep_clock_result", OpResult.of(type(None)))
    ns: int


@dataclass
class AdvanceClockArgs:
    """Move the guest's wall clock by this many nanoseconds."""

    KIND = "advance_clock"
    REPLY = ("advance_clock_result", OpResult.of(type(None)))
    ns: int


@dataclass
class SyscallArgs:
    """A raw system call, with buffers the agent lays out in its memory."""

    KIND = "syscall"
    REPLY = ("syscall_result", SyscallResult)
    nr: int
    args: list[int] = field(default_factory=lambda: [0] * 6)
    bufs: list[bytes] = omit_empty(default_factory=list)
    ptrs: list[int] = field(default_factory=list)
    nested: list[NestedPtr] = field(default_factory=list)


@dataclass
class IoctlArgs:
    """An ioctl on an open file handle."""

    KIND = "ioctl"
    REPLY = ("ioctl_result", OpResult.of(IoctlOk))
    handle: int
    cmd: int
    data: bytes = b""
    bufs: list[bytes] = field(default_factory=list)
    ptr_offsets: list[int] = field(default_factory=list)


@dataclass
class ReadMemArgs:
    """Read the agent's own memory."""

    KIND = "read_mem"
    REPLY = ("read_mem_result", OpResult.of(ReadMemOk))
    addr: int
    len: int


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


@dataclass
class BatchExecResult:
    """One exec result per batch item."""

    results: list[OpResult.of(ExecOk)]  # type: ignore[valid-type]


@dataclass
class BatchExecArgs:
    """Several execs in one round trip, run in order."""

    KIND = "batch_exec"
    REPLY = ("batch_exec_result", BatchExecResult)
    items: list[ExecArgs]


class Message:
    """The `{"kind", "data"}` envelope of one op or reply.  `data` is typed."""

    __slots__ = ("kind", "data")

    def __init__(self, kind: str, data: Any = None) -> None:
        self.kind = kind
        self.data = data

    @classmethod
    def of(cls, op: Any) -> "Message":
        return cls(op.KIND, op)

    def __wire_encode__(self) -> dict:
        return {"kind": self.kind, "data": encode(self.data)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.kind, self.data) == (other.kind, other.data)

    def __repr__(self) -> str:
        return f"Message({self.kind!r}, {self.data!r})"


class HostMessage(Message):
    __slots__ = ()

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "HostMessage":
        kind, data = _split(value, where)
        tp = HOST_KINDS.get(kind)
        if tp is None:
            raise WireError(f"{where}: unknown op kind `{kind}`")
        return cls(kind, decode(tp, data, f"{where}.{kind}"))


class AgentMessage(Message):
    __slots__ = ()

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "AgentMessage":
        kind, data = _split(value, where)
        tp = AGENT_KINDS.get(kind)
        if tp is None:
            raise WireError(f"{where}: unknown reply kind `{kind}`")
        return cls(kind, decode(tp, data, f"{where}.{kind}"))


def _split(value: Any, where: str) -> tuple[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise WireError(f"{where}: expected a map with a string `kind`")
    return value["kind"], value.get("data")


@dataclass
class BatchOpResult:
    """One reply per batch item."""

    responses: list[AgentMessage]


@dataclass
class BatchOpArgs:
    """Several ops in one round trip, run in order."""

    KIND = "batch_op"
    REPLY = ("batch_op_result", BatchOpResult)
    items: list[HostMessage]


@dataclass
class StreamFrame:
    """Agent -> host: the next bytes of a stream."""

    KIND = "stream_frame"
    data: bytes


# ---- multiplexer control (our transport; see docs/protocol.md) -----------------------


@dataclass
class Cancel:
    """Host -> agent: forget this channel (stop its stream, drop its late reply)."""

    KIND = "cancel"


@dataclass
class Credit:
    """Host -> agent: the host consumed `bytes` of this stream channel; send more."""

    KIND = "credit"
    bytes: int


OPS: "list[Any]" = [
    ExecArgs, OpenFileArgs, ReadArgs, WriteArgs, CloseArgs, ReadFileArgs, WriteFileArgs,
    StatArgs, ListdirArgs, MkdirArgs, UnlinkArgs, RenameArgs, SeekArgs, TailFileArgs,
    FdStreamArgs, ProcStreamArgs, RunAsyncArgs, WaitArgs, KillArgs, GetPidArgs,
    ProcStdinWriteArgs, ProcStdinCloseArgs, ProcStatusArgs, GetTimeArgs, SetTimeArgs,
    SleepClockArgs, AdvanceClockArgs, SyscallArgs, IoctlArgs, ReadMemArgs,
    SpawnWorkerArgs, WorkerExecArgs, WorkerRunAsyncArgs, WorkerOpenFileArgs,
    WorkerSyscallArgs, WorkerSyscallBeginArgs, WorkerSyscallAwaitArgs, WorkerKillArgs,
    WorkerJoinArgs, BatchExecArgs, BatchOpArgs,
]

HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
HOST_KINDS.update({Hello.KIND: Hello, Cancel.KIND: Cancel, Credit.KIND: Credit})

AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}
AGENT_KINDS.update({
    HelloOk.KIND: HelloOk,
    HelloErr.KIND: HelloErr,
    StreamFrame.KIND: StreamFrame,
    "stream_end": StreamEnd,
    "agent_error": AgentError,
})

STREAM_KINDS = frozenset(op.KIND for op in OPS if getattr(op, "STREAM", False))

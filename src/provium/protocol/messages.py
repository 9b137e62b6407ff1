"""Every host->agent op and agent->host reply, as dataclasses.

Field names and kinds follow the reference's wire (`spec/reference-design.md`
§11).  Each op class names its `KIND` and the `REPLY` kind and payload type
the agent answers with.  `Message` is the `{kind, data}` envelope; the channel
multiplexer (`envelope.py`) adds the channel number around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

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


# ---- payloads of successful results -------------------------------------------------


@dataclass
class ExecOk:
    status: ExitStatus
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class DataOk:
    data: bytes


@dataclass
class WrittenOk:
    written: int


@dataclass
class TimeOk:
    ns: int


@dataclass
class IoctlOk:
    ret: int
    out_data: bytes
    out_bufs: list[bytes] = field(default_factory=list)


@dataclass
class ReadMemOk:
    bytes: bytes


@dataclass
class JoinOk:
    exit_status: int


@dataclass
class SyscallResult:
    ret: int
    errno: int = 0
    out_bufs: list[bytes] = omit_empty(default_factory=list)


# ---- handshake ----------------------------------------------------------------------


@dataclass
class Hello:
    KIND: ClassVar[str] = "hello"
    protocol_version: int = PROTOCOL_VERSION


@dataclass
class HelloOk:
    KIND: ClassVar[str] = "hello_ok"
    protocol_version: int
    agent: AgentInfo


@dataclass
class HelloErr:
    KIND: ClassVar[str] = "hello_err"
    host_version: int
    agent_version: int


# ---- ops ------------------------------------------------------------------------------


@dataclass
class ExecArgs:
    KIND: ClassVar[str] = "exec"
    REPLY: ClassVar[tuple] = ("exec_result", OpResult.of(ExecOk))
    cmd: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_clear: bool = False
    stdin: bytes = b""
    cwd: str | None = None
    timeout_ms: int | None = None


@dataclass
class RunAsyncArgs:
    KIND: ClassVar[str] = "run_async"
    REPLY: ClassVar[tuple] = ("run_async_result", OpResult.of(int))
    cmd: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_clear: bool = False
    cwd: str | None = None


@dataclass
class OpenFileArgs:
    KIND: ClassVar[str] = "open_file"
    REPLY: ClassVar[tuple] = ("open_file_result", OpResult.of(int))
    path: str
    mode: OpenMode = field(default_factory=OpenMode)
    create_perm: int | None = None


@dataclass
class ReadArgs:
    KIND: ClassVar[str] = "read"
    REPLY: ClassVar[tuple] = ("read_result", OpResult.of(DataOk))
    handle: int
    max_bytes: int


@dataclass
class WriteArgs:
    KIND: ClassVar[str] = "write"
    REPLY: ClassVar[tuple] = ("write_result", OpResult.of(WrittenOk))
    handle: int
    data: bytes


@dataclass
class CloseArgs:
    KIND: ClassVar[str] = "close"
    REPLY: ClassVar[tuple] = ("close_result", OpResult.of(type(None)))
    handle: int


@dataclass
class ReadFileArgs:
    KIND: ClassVar[str] = "read_file"
    REPLY: ClassVar[tuple] = ("read_file_result", OpResult.of(DataOk))
    path: str


@dataclass
class WriteFileArgs:
    KIND: ClassVar[str] = "write_file"
    REPLY: ClassVar[tuple] = ("write_file_result", OpResult.of(type(None)))
    path: str
    data: bytes
    mode: WriteFileMode = WriteFileMode.REPLACE
    create_perm: int | None = None


@dataclass
class StatArgs:
    KIND: ClassVar[str] = "stat"
    REPLY: ClassVar[tuple] = ("stat_result", OpResult.of(FileMetadata))
    path: str
    follow_symlinks: bool = True


@dataclass
class ListdirArgs:
    KIND: ClassVar[str] = "listdir"
    REPLY: ClassVar[tuple] = ("listdir_result", OpResult.of(list[DirEntry]))
    path: str


@dataclass
class MkdirArgs:
    KIND: ClassVar[str] = "mkdir"
    REPLY: ClassVar[tuple] = ("mkdir_result", OpResult.of(type(None)))
    path: str
    parents: bool = False
    create_perm: int | None = None


@dataclass
class UnlinkArgs:
    KIND: ClassVar[str] = "unlink"
    REPLY: ClassVar[tuple] = ("unlink_result", OpResult.of(type(None)))
    path: str


@dataclass
class RenameArgs:
    KIND: ClassVar[str] = "rename"
    REPLY: ClassVar[tuple] = ("rename_result", OpResult.of(type(None)))
    from_: str = wire_name("from")
    to: str = ""


@dataclass
class SeekArgs:
    KIND: ClassVar[str] = "seek"
    REPLY: ClassVar[tuple] = ("seek_result", OpResult.of(int))
    handle: int
    offset: int
    whence: SeekWhence = SeekWhence.SET


@dataclass
class TailFileArgs:
    KIND: ClassVar[str] = "tail_file"
    REPLY: ClassVar[tuple] = ("tail_file_result", OpResult.of(type(None)))
    STREAM: ClassVar[bool] = True
    path: str
    start: TailStart = field(default_factory=TailStart)


@dataclass
class FdStreamArgs:
    KIND: ClassVar[str] = "fd_stream"
    REPLY: ClassVar[tuple] = ("fd_stream_result", OpResult.of(type(None)))
    STREAM: ClassVar[bool] = True
    handle: int


@dataclass
class ProcStreamArgs:
    KIND: ClassVar[str] = "proc_stream"
    REPLY: ClassVar[tuple] = ("proc_stream_result", OpResult.of(type(None)))
    STREAM: ClassVar[bool] = True
    handle: int
    channel: ProcStreamChannel = ProcStreamChannel.STDOUT


@dataclass
class WaitArgs:
    KIND: ClassVar[str] = "wait"
    REPLY: ClassVar[tuple] = ("wait_result", OpResult.of(ExecOk))
    handle: int
    timeout_ms: int | None = None


@dataclass
class KillArgs:
    KIND: ClassVar[str] = "kill"
    REPLY: ClassVar[tuple] = ("kill_result", OpResult.of(type(None)))
    handle: int
    signal: int = 15


@dataclass
class GetPidArgs:
    KIND: ClassVar[str] = "get_pid"
    REPLY: ClassVar[tuple] = ("get_pid_result", OpResult.of(int))
    handle: int


@dataclass
class ProcStdinWriteArgs:
    KIND: ClassVar[str] = "proc_stdin_write"
    REPLY: ClassVar[tuple] = ("proc_stdin_write_result", OpResult.of(WrittenOk))
    handle: int
    data: bytes


@dataclass
class ProcStdinCloseArgs:
    KIND: ClassVar[str] = "proc_stdin_close"
    REPLY: ClassVar[tuple] = ("proc_stdin_close_result", OpResult.of(type(None)))
    handle: int


@dataclass
class ProcStatusArgs:
    KIND: ClassVar[str] = "proc_status"
    REPLY: ClassVar[tuple] = ("proc_status_result", OpResult.of(ProcessLiveStatus))
    handle: int


@dataclass
class GetTimeArgs:
    KIND: ClassVar[str] = "get_time"
    REPLY: ClassVar[tuple] = ("get_time_result", OpResult.of(TimeOk))


@dataclass
class SetTimeArgs:
    KIND: ClassVar[str] = "set_time"
    REPLY: ClassVar[tuple] = ("set_time_result", OpResult.of(type(None)))
    ns: int


@dataclass
class SleepClockArgs:
    KIND: ClassVar[str] = "sleep_clock"
    REPLY: ClassVar[tuple] = ("sleep_clock_result", OpResult.of(type(None)))
    ns: int


@dataclass
class AdvanceClockArgs:
    KIND: ClassVar[str] = "advance_clock"
    REPLY: ClassVar[tuple] = ("advance_clock_result", OpResult.of(type(None)))
    ns: int


@dataclass
class SyscallArgs:
    KIND: ClassVar[str] = "syscall"
    REPLY: ClassVar[tuple] = ("syscall_result", SyscallResult)
    nr: int
    args: list[int] = field(default_factory=lambda: [0] * 6)
    bufs: list[bytes] = omit_empty(default_factory=list)
    ptrs: list[int] = field(default_factory=list)
    nested: list[NestedPtr] = field(default_factory=list)


@dataclass
class IoctlArgs:
    KIND: ClassVar[str] = "ioctl"
    REPLY: ClassVar[tuple] = ("ioctl_result", OpResult.of(IoctlOk))
    handle: int
    cmd: int
    data: bytes = b""
    bufs: list[bytes] = field(default_factory=list)
    ptr_offsets: list[int] = field(default_factory=list)


@dataclass
class ReadMemArgs:
    KIND: ClassVar[str] = "read_mem"
    REPLY: ClassVar[tuple] = ("read_mem_result", OpResult.of(ReadMemOk))
    addr: int
    len: int


@dataclass
class SpawnWorkerArgs:
    """Credentials are our addition: the reference's guest applies them itself."""

    KIND: ClassVar[str] = "spawn_worker"
    REPLY: ClassVar[tuple] = ("spawn_worker_result", OpResult.of(int))
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None


@dataclass
class WorkerExecArgs:
    KIND: ClassVar[str] = "worker_exec"
    REPLY: ClassVar[tuple] = ("worker_exec_result", OpResult.of(ExecOk))
    handle: int
    exec: ExecArgs


@dataclass
class WorkerRunAsyncArgs:
    KIND: ClassVar[str] = "worker_run_async"
    REPLY: ClassVar[tuple] = ("worker_run_async_result", OpResult.of(int))
    handle: int
    args: RunAsyncArgs


@dataclass
class WorkerOpenFileArgs:
    KIND: ClassVar[str] = "worker_open_file"
    REPLY: ClassVar[tuple] = ("worker_open_file_result", OpResult.of(int))
    handle: int
    args: OpenFileArgs


@dataclass
class WorkerSyscallArgs:
    KIND: ClassVar[str] = "worker_syscall"
    REPLY: ClassVar[tuple] = ("worker_syscall_result", SyscallResult)
    handle: int
    args: SyscallArgs


@dataclass
class WorkerSyscallBeginArgs:
    KIND: ClassVar[str] = "worker_syscall_begin"
    REPLY: ClassVar[tuple] = ("worker_syscall_begin_result", OpResult.of(int))
    handle: int
    args: SyscallArgs


@dataclass
class WorkerSyscallAwaitArgs:
    KIND: ClassVar[str] = "worker_syscall_await"
    REPLY: ClassVar[tuple] = ("worker_syscall_await_result", SyscallResult)
    handle: int
    async_id: int


@dataclass
class WorkerKillArgs:
    KIND: ClassVar[str] = "worker_kill"
    REPLY: ClassVar[tuple] = ("worker_kill_result", OpResult.of(int))
    handle: int
    signal: int = 15


@dataclass
class WorkerJoinArgs:
    KIND: ClassVar[str] = "worker_join"
    REPLY: ClassVar[tuple] = ("worker_join_result", OpResult.of(JoinOk))
    handle: int


@dataclass
class BatchExecResult:
    results: list[OpResult.of(ExecOk)]  # type: ignore[valid-type]


@dataclass
class BatchExecArgs:
    KIND: ClassVar[str] = "batch_exec"
    REPLY: ClassVar[tuple] = ("batch_exec_result", BatchExecResult)
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
    responses: list[AgentMessage]


@dataclass
class BatchOpArgs:
    KIND: ClassVar[str] = "batch_op"
    REPLY: ClassVar[tuple] = ("batch_op_result", BatchOpResult)
    items: list[HostMessage]


@dataclass
class StreamFrame:
    KIND: ClassVar[str] = "stream_frame"
    data: bytes


# ---- multiplexer control (our transport; see docs/protocol.md) -----------------------


@dataclass
class Cancel:
    """Host -> agent: forget this channel (stop its stream, drop its late reply)."""

    KIND: ClassVar[str] = "cancel"


@dataclass
class Credit:
    """Host -> agent: the host consumed `bytes` of this stream channel; send more."""

    KIND: ClassVar[str] = "credit"
    bytes: int


OPS: list[type] = [
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

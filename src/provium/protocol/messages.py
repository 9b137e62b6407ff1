"""Every host->agent op and agent->host reply, as dataclasses.

Field names and kinds follow the reference's wire (`spec/reference-design.md`
§11).  Each op class names its `KIND` and the `REPLY` kind and payload type
the agent answers with.  `Message` is the `{kind, data}` envelope; the channel
multiplexer (`envelope.py`) adds the channel number around it.

This module gathers them all, for the host.  Each is defined in `core` (errors,
results, the handshake), `ops_control` (a refused handshake, cancel, credit) or
in its op family's module (`ops_files`, `ops_procs`, `ops_streams` with stream
frames, `ops_clock`, `ops_syscalls`, `ops_workers`, `ops_batch`), which the agent imports only when that family's first op arrives
(`kinds.py` routes a kind to its family before then).
"""

from __future__ import annotations

from . import core, ops_batch, ops_clock, ops_control, ops_files, ops_procs, ops_streams, ops_syscalls, ops_workers
from .core import PROTOCOL_VERSION, AgentError, AgentInfo, Hello, HelloOk, OpResult, WrittenOk
from .kinds import STREAM_KINDS
from .ops_batch import AgentMessage, BatchExecArgs, BatchExecResult, BatchOpArgs, BatchOpResult, HostMessage, Message
from .ops_clock import AdvanceClockArgs, GetTimeArgs, SetTimeArgs, SleepClockArgs, TimeOk
from .ops_control import Cancel, Credit, HelloErr
from .ops_files import (
    CloseArgs,
    DataOk,
    ListdirArgs,
    MkdirArgs,
    OpenFileArgs,
    ReadArgs,
    ReadFileArgs,
    RenameArgs,
    SeekArgs,
    StatArgs,
    UnlinkArgs,
    WriteArgs,
    WriteFileArgs,
)
from .ops_procs import (
    ExecArgs,
    ExecOk,
    GetPidArgs,
    KillArgs,
    ProcStatusArgs,
    ProcStdinCloseArgs,
    ProcStdinWriteArgs,
    RunAsyncArgs,
    WaitArgs,
)
from .ops_streams import FdStreamArgs, ProcStreamArgs, StreamEnd, StreamFrame, TailFileArgs
from .ops_syscalls import IoctlArgs, IoctlOk, ReadMemArgs, ReadMemOk, SyscallArgs, SyscallResult
from .ops_workers import (
    JoinOk,
    SpawnWorkerArgs,
    WorkerExecArgs,
    WorkerJoinArgs,
    WorkerKillArgs,
    WorkerOpenFileArgs,
    WorkerRunAsyncArgs,
    WorkerSyscallArgs,
    WorkerSyscallAwaitArgs,
    WorkerSyscallBeginArgs,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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

# Every kind, for the host (the agent looks kinds up through kinds.py instead).
HOST_KINDS: dict[str, Any] = {}
AGENT_KINDS: dict[str, Any] = {}
for _fam in (core, ops_control, ops_files, ops_procs, ops_streams, ops_clock, ops_syscalls, ops_workers, ops_batch):
    HOST_KINDS.update(_fam.HOST_KINDS)
    AGENT_KINDS.update(_fam.AGENT_KINDS)
del _fam

__all__ = [
    "AGENT_KINDS", "HOST_KINDS", "OPS", "PROTOCOL_VERSION", "STREAM_KINDS",
    "AdvanceClockArgs", "AgentError", "AgentInfo", "AgentMessage", "BatchExecArgs", "BatchExecResult",
    "BatchOpArgs", "BatchOpResult", "Cancel", "CloseArgs", "Credit", "DataOk", "ExecArgs", "ExecOk",
    "FdStreamArgs", "GetPidArgs", "GetTimeArgs", "Hello", "HelloErr", "HelloOk", "HostMessage", "IoctlArgs",
    "IoctlOk", "JoinOk", "KillArgs", "ListdirArgs", "Message", "MkdirArgs", "OpResult", "OpenFileArgs",
    "ProcStatusArgs", "ProcStdinCloseArgs", "ProcStdinWriteArgs", "ProcStreamArgs", "ReadArgs", "ReadFileArgs",
    "ReadMemArgs", "ReadMemOk", "RenameArgs", "RunAsyncArgs", "SeekArgs", "SetTimeArgs", "SleepClockArgs",
    "SpawnWorkerArgs", "StatArgs", "StreamEnd", "StreamFrame", "SyscallArgs", "SyscallResult", "TailFileArgs",
    "TimeOk", "UnlinkArgs", "WaitArgs", "WorkerExecArgs", "WorkerJoinArgs", "WorkerKillArgs",
    "WorkerOpenFileArgs", "WorkerRunAsyncArgs", "WorkerSyscallArgs", "WorkerSyscallAwaitArgs",
    "WorkerSyscallBeginArgs", "WriteArgs", "WriteFileArgs", "WrittenOk",
]

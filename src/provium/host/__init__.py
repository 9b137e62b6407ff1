"""The host-side model of a Provium run: sessions, VMs and what runs in them.

A synchronous Python API (the Lua bindings are a thin layer over it).  Users
reach it through the stable names of `import provium` (docs/python.md):

    import provium

    with provium.Session.open(vmm="local") as s:
        vm = s.lab().vm("box", "linux").boot()
        r = vm.run("echo hi")
        r.assert_ok()

Methods mirror the Lua API's names (`spec/vm.md` and friends).  Where a Lua
method returns several values, the Python one returns a tuple (`read_mem`).
"""

# The names are imported on first use (PEP 562), as in `provium/__init__.py`: any
# `provium.host.<module>` import runs this file first, and the CLI (which needs
# only `values` and `errors` to parse its flags) must not pay for the whole model.
TYPE_CHECKING = False

from .. import _lazy_names  # noqa: E402

_EXPORTS = {
    "Batch": ".batch",
    "Clock": ".clock",
    "Console": ".console",
    "ConsoleIOError": ".console",
    "ConsoleStream": ".console",
    "ConsoleUnavailable": ".console",
    "AgentCommError": ".errors",
    "AgentGone": ".errors",
    "ArgumentError": ".errors",
    "CommandFailed": ".errors",
    "GuestOsError": ".errors",
    "HandleError": ".errors",
    "Interrupted": ".errors",
    "ProviumError": ".errors",
    "SessionError": ".errors",
    "StreamClosed": ".errors",
    "StreamEof": ".errors",
    "StreamError": ".errors",
    "StreamTimeout": ".errors",
    "VmError": ".errors",
    "VmmFailure": ".errors",
    "WrongState": ".errors",
    "Disk": ".disk",
    "DiskError": ".disk",
    "DiskIoError": ".disk",
    "File": ".file",
    "Process": ".process",
    "ResourceMeta": ".registry",
    "DirEntry": ".results",
    "IoctlOutcome": ".results",
    "RunResult": ".results",
    "Stat": ".results",
    "SyscallOutcome": ".results",
    "Session": ".session",
    "TIMEOUT": ".streams",
    "Stream": ".streams",
    "Tail": ".streams",
    "PendingSyscall": ".syscalls",
    "parse_duration": ".values",
    "parse_signal": ".values",
    "parse_size": ".values",
    "signal_name": ".values",
    "VM": ".vm",
    "Worker": ".worker",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .batch import Batch
    from .clock import Clock
    from .console import Console, ConsoleIOError, ConsoleStream, ConsoleUnavailable
    from .errors import (
        AgentCommError,
        AgentGone,
        ArgumentError,
        CommandFailed,
        GuestOsError,
        HandleError,
        Interrupted,
        ProviumError,
        SessionError,
        StreamClosed,
        StreamEof,
        StreamError,
        StreamTimeout,
        VmError,
        VmmFailure,
        WrongState,
    )
    from .disk import Disk, DiskError, DiskIoError
    from .file import File
    from .process import Process
    from .registry import ResourceMeta
    from .results import DirEntry, IoctlOutcome, RunResult, Stat, SyscallOutcome
    from .session import Session
    from .streams import TIMEOUT, Stream, Tail
    from .syscalls import PendingSyscall
    from .values import parse_duration, parse_signal, parse_size, signal_name
    from .vm import VM
    from .worker import Worker

__all__ = [
    "AgentCommError", "AgentGone", "ArgumentError", "Batch", "Clock", "CommandFailed", "Console", "ConsoleIOError",
    "Disk", "DiskError", "DiskIoError",
    "ConsoleStream", "ConsoleUnavailable", "DirEntry", "File",
    "GuestOsError", "HandleError", "Interrupted", "IoctlOutcome", "PendingSyscall", "Process", "ProviumError",
    "ResourceMeta", "RunResult", "Session", "SessionError", "Stat", "Stream", "StreamClosed", "StreamEof",
    "StreamError", "StreamTimeout", "SyscallOutcome", "TIMEOUT", "Tail", "VM", "VmError", "VmmFailure", "Worker",
    "WrongState", "parse_duration", "parse_signal", "parse_size", "signal_name",
]


__getattr__, __dir__ = _lazy_names(__name__, _EXPORTS, globals())

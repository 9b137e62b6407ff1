"""Provium: a test harness for software that needs a real operating system under it.

The public Python API (documented in `docs/python.md`)::

    import provium

    with provium.Session.open(vmm="qemu") as s:
        lab = s.lab()
        vm = lab.vm("box", "linux")
        vm.boot()
        assert vm.run("echo hi").stdout == b"hi\\n"

Every name in `__all__` is stable: it keeps its meaning and its arguments
within a major version.  Anything reached only through a submodule
(`provium.host.vm`, `provium.vmm`, ...) is internal and may change.

The names are imported on first use (module `__getattr__`, PEP 562): the
`provium` CLI, the guest agent and the pytest plugin import this package, and
none of them should pay for the host model (asyncio, msgpack, QEMU control)
before it is needed.
"""

# Not `from typing import TYPE_CHECKING`: the guest agent imports this package
# first, and `typing` stays out of its start (see agent/startup.py).
TYPE_CHECKING = False

__version__ = "0.1.0"

# name -> module that defines it (relative to this package)
_EXPORTS = {
    # the model
    "Session": ".host.session",
    "Lab": ".host.lab",
    "VM": ".host.vm",
    "Bridge": ".host.bridge",
    "Nic": ".host.bridge",
    "Disk": ".host.disk",
    "Snapshot": ".host.snapshot",
    "LabSnapshot": ".host.labsnap",
    "Process": ".host.process",
    "Worker": ".host.worker",
    "File": ".host.file",
    "Stream": ".host.streams",
    "Tail": ".host.streams",
    "Console": ".host.console",
    "ConsoleStream": ".host.console",
    "Clock": ".host.clock",
    "VmState": ".host.states",
    # result values
    "RunResult": ".host.results",
    "Stat": ".host.results",
    "DirEntry": ".host.results",
    "SyscallOutcome": ".host.results",
    "IoctlOutcome": ".host.results",
    # errors: the root and its families
    "ProviumError": ".errors",
    "ConfigError": ".errors",
    "HostSetupError": ".errors",
    "ImageError": ".errors",
    "VmmError": ".errors",
    "ProtocolError": ".errors",
    "GuestError": ".errors",
    "ArgumentError": ".errors",
    "StateError": ".errors",
    "CheckFailed": ".errors",
    "NotYetImplemented": ".errors",
    # the concrete errors a test most often catches
    "VmError": ".host.errors",
    "WrongState": ".host.errors",
    "CommandFailed": ".host.errors",
    "GuestOsError": ".host.errors",
    "AgentGone": ".host.errors",
    "StreamTimeout": ".host.errors",
    "StreamEof": ".host.errors",
    "SessionError": ".host.errors",
    # helpers
    "parse_duration": ".host.values",
    "parse_size": ".host.values",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .errors import (
        ArgumentError,
        CheckFailed,
        ConfigError,
        GuestError,
        HostSetupError,
        ImageError,
        NotYetImplemented,
        ProtocolError,
        ProviumError,
        StateError,
        VmmError,
    )
    from .host.bridge import Bridge, Nic
    from .host.clock import Clock
    from .host.console import Console, ConsoleStream
    from .host.disk import Disk
    from .host.errors import (
        AgentGone,
        CommandFailed,
        GuestOsError,
        SessionError,
        StreamEof,
        StreamTimeout,
        VmError,
        WrongState,
    )
    from .host.file import File
    from .host.lab import Lab
    from .host.labsnap import LabSnapshot
    from .host.process import Process
    from .host.results import DirEntry, IoctlOutcome, RunResult, Stat, SyscallOutcome
    from .host.session import Session
    from .host.snapshot import Snapshot
    from .host.states import VmState
    from .host.streams import Stream, Tail
    from .host.values import parse_duration, parse_size
    from .host.vm import VM
    from .host.worker import Worker


def _lazy_names(package: str, exports: "dict[str, str]", namespace: "dict[str, object]"):
    """The PEP 562 `__getattr__` and `__dir__` of a package whose names (`exports`: name ->
    module, relative to `package`) are imported on first use.  Shared by `provium`,
    `provium.host` and `provium.scheduler`; it lives here because the guest agent ships
    only this file and `errors.py` of the top-level package."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        from importlib import import_module  # here: `import provium` alone stays minimal

        value = getattr(import_module(module, package), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> "list[str]":
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


__getattr__, __dir__ = _lazy_names(__name__, _EXPORTS, globals())

"""Wire types of the raw ops: syscall, ioctl, read_mem (imported on the first such op,
see kinds.py)."""

from dataclasses import dataclass, field

from .codec import ANY, omit_empty
from .core import OpResult

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


@dataclass
class NestedPtr:
    """Write the address of bufs[child] into bufs[parent] at offset."""

    parent: int
    child: int
    offset: int


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
class SyscallResult:
    """A raw system call's return value, its errno when negative, and its buffers afterwards."""

    ret: int
    errno: int = 0
    out_bufs: list[bytes] = omit_empty(default_factory=list)


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


OPS: "list[Any]" = [SyscallArgs, IoctlArgs, ReadMemArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

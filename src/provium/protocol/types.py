"""Shared value types of the host<->agent wire (field names follow the reference)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .codec import ANY, WireError, decode, encode

# Class constants are unannotated, and `typing` is imported only for type
# checkers: see the note in messages.py.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class AgentErrorKind(str, enum.Enum):
    BAD_REQUEST = "bad_request"
    UNSUPPORTED = "unsupported"
    UNKNOWN_HANDLE = "unknown_handle"
    INTERNAL = "internal"


class EntryType(str, enum.Enum):
    """What a path is; the wire spells these as the reference does, and so do Lua and Python."""

    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    BLOCK_DEVICE = "block_device"
    CHAR_DEVICE = "char_device"
    OTHER = "other"


class WriteFileMode(str, enum.Enum):
    REPLACE = "replace"
    APPEND = "append"
    EXCLUSIVE = "exclusive"


class SeekWhence(str, enum.Enum):
    SET = "set"
    CUR = "cur"
    END = "end"


class ProcessLiveStatus(str, enum.Enum):
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class ProcStreamChannel(str, enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass
class OsError:
    """An error the OS reported (errno 0: made up by the agent)."""

    errno: int
    message: str

    def __str__(self) -> str:
        # errno 0 marks an error made up by the agent, not one from the OS.
        return self.message if self.errno == 0 else f"{self.message} (errno {self.errno})"


@dataclass
class AgentError:
    """Why a request could not be served at all."""

    kind: AgentErrorKind
    message: str


@dataclass
class AgentInfo:
    """Who answered the handshake."""

    os: str
    agent_version: str
    kernel: str | None = None
    capabilities: list[str] = field(default_factory=list)


@dataclass
class DirEntry:
    """One entry of a directory listing."""

    name: str
    entry_type: EntryType


@dataclass
class FileMetadata:
    """What stat tells about a path."""

    size: int
    mtime_ns: int
    entry_type: EntryType
    perm: int


@dataclass
class OpenMode:
    """How to open a file; every flag is always sent."""

    read: bool = False
    write: bool = False
    create: bool = False
    truncate: bool = False
    append: bool = False
    exclusive: bool = False


@dataclass
class NestedPtr:
    """Write the address of bufs[child] into bufs[parent] at offset."""

    parent: int
    child: int
    offset: int


class _Tagged:
    """Base for `{"kind": tag[, "value": v]}` unions."""

    TAGS: dict[str, Any] = {}  # tag -> value type, or None for a bare tag


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


@dataclass(frozen=True)
class TailStart(_Tagged):
    """Where a tail starts: beginning, end or offset(n)."""

    kind: str = "end"  # beginning | end | offset
    value: int | None = None

    TAGS = {"beginning": None, "end": None, "offset": int}

    def __wire_encode__(self) -> dict:
        return {"kind": self.kind} if self.TAGS[self.kind] is None else {"kind": self.kind, "value": self.value}

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "TailStart":
        return _decode_tagged(cls, value, where)


def _decode_tagged(cls, value: Any, where: str):
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise WireError(f"{where}: expected a map with a `kind` tag for {cls.__name__}")
    tag = value["kind"]
    if tag not in cls.TAGS:
        raise WireError(f"{where}: unknown {cls.__name__} kind {tag!r} (valid: {', '.join(cls.TAGS)})")
    vt = cls.TAGS[tag]
    if vt is None:
        return cls(tag)
    if "value" not in value:
        raise WireError(f"{where}: {cls.__name__} `{tag}` needs a value")
    return cls(tag, decode(vt, value["value"], f"{where}.value"))


@dataclass(frozen=True)
class StreamEnd:
    """Why a stream stopped: `{"reason": "eof"}` or `{"reason": "error", "data": OsError}`."""

    reason: str = "eof"
    error: OsError | None = None

    def __wire_encode__(self) -> dict:
        if self.reason == "error":
            return {"reason": "error", "data": encode(self.error)}
        return {"reason": self.reason}

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "StreamEnd":
        if not isinstance(value, dict) or value.get("reason") not in ("eof", "error"):
            raise WireError(f"{where}: expected {{reason: eof|error}}")
        if value["reason"] == "error":
            return cls("error", decode(OsError, value.get("data"), f"{where}.data"))
        return cls("eof")


class OpResult:
    """`{"outcome": "ok", "value": T}` or `{"outcome": "err", "value": OsError}`.

    `OpResult.of(T)` makes the decoder for a given success type.
    """

    VALUE = ANY
    _cache: dict = {}

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value

    @classmethod
    def success(cls, value: Any = None) -> "OpResult":
        return cls(True, value)

    @classmethod
    def failure(cls, errno: int, message: str) -> "OpResult":
        return cls(False, OsError(errno, message))

    @classmethod
    def of(cls, tp: Any) -> type:
        sub = cls._cache.get(tp)
        if sub is None:
            name = getattr(tp, "__name__", str(tp))
            sub = type(f"OpResult[{name}]", (cls,), {"VALUE": tp, "__slots__": ()})
            cls._cache[tp] = sub
        return sub

    def __wire_encode__(self) -> dict:
        return {"outcome": "ok" if self.ok else "err", "value": encode(self.value)}

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "OpResult":
        if not isinstance(value, dict) or value.get("outcome") not in ("ok", "err"):
            raise WireError(f"{where}: expected {{outcome: ok|err, value}}")
        if value["outcome"] == "ok":
            return cls(True, decode(cls.VALUE, value.get("value"), f"{where}.value"))
        return cls(False, decode(OsError, value.get("value"), f"{where}.value"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpResult) and (self.ok, self.value) == (other.ok, other.value)

    def __repr__(self) -> str:
        return f"OpResult({'ok' if self.ok else 'err'}, {self.value!r})"

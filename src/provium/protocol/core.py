"""The wire types every session needs from its first frame: errors, results, the handshake.

The types of each op family live in a module of their own (`ops_files`,
`ops_procs`, ...), which the agent imports only when the first op of that family
arrives (`kinds.py`); building some seventy dataclasses and enums at import was a
quarter of the agent's start.  So do the rarer parts of the session itself: the
refused handshake and the multiplexer's control messages (`ops_control`), stream
frames (`ops_streams`).  `types` and `messages` gather them all for the host.
"""

import enum
from dataclasses import dataclass, field

from .codec import ANY, WireError, decode, encode

# Class constants are unannotated, and `typing` is imported only for type
# checkers: `KIND`, `REPLY` and `STREAM` are plain class attributes, not
# `ClassVar` annotations, because dataclasses recognises a string `ClassVar[...]`
# only when `typing` is already imported, and the agent does not import it (it is
# a noticeable part of its start inside a slow guest).  An annotated constant
# would silently become a field there.  tests/unit/test_agent_startup.py checks.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any

PROTOCOL_VERSION = 1


class AgentErrorKind(str, enum.Enum):
    BAD_REQUEST = "bad_request"
    UNSUPPORTED = "unsupported"
    UNKNOWN_HANDLE = "unknown_handle"
    INTERNAL = "internal"


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


class _Tagged:
    """Base for `{"kind": tag[, "value": v]}` unions."""

    TAGS: dict[str, Any] = {}  # tag -> value type, or None for a bare tag


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


@dataclass
class WrittenOk:
    """How many bytes one write(2) took (a file's `write`, a process's stdin)."""

    written: int


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


OPS: "list[Any]" = []  # no op of this module has a reply of its own

HOST_KINDS: "dict[str, Any]" = {Hello.KIND: Hello}
AGENT_KINDS: "dict[str, Any]" = {HelloOk.KIND: HelloOk, "agent_error": AgentError}

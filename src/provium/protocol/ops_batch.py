"""Wire types of the batch ops: several execs, or several ops of any kind, in one
round trip (imported on the first such op, see kinds.py), and the `{kind, data}`
message a batch carries for each of its items."""

from dataclasses import dataclass

from . import kinds
from .codec import ANY, WireError, decode, encode
from .core import OpResult
from .ops_procs import ExecArgs, ExecOk

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


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
        tp = kinds.host_type(kind)
        if tp is None:
            raise WireError(f"{where}: unknown op kind `{kind}`")
        return cls(kind, decode(tp, data, f"{where}.{kind}"))


class AgentMessage(Message):
    __slots__ = ()

    @classmethod
    def __wire_decode__(cls, value: Any, where: str) -> "AgentMessage":
        kind, data = _split(value, where)
        tp = kinds.agent_type(kind)
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


OPS: "list[Any]" = [BatchExecArgs, BatchOpArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

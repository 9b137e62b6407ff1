"""Wire types of the stream ops: tail_file, fd_stream, proc_stream, and what a stream
sends after its ack, StreamFrame and StreamEnd (imported on the first such op, see
kinds.py)."""

import enum
from dataclasses import dataclass, field

from .codec import ANY, WireError, decode, encode
from .core import OpResult, OsError, _decode_tagged, _Tagged

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


@dataclass
class StreamFrame:
    """Agent -> host: the next bytes of a stream."""

    KIND = "stream_frame"
    data: bytes


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


class ProcStreamChannel(str, enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


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


OPS: "list[Any]" = [TailFileArgs, FdStreamArgs, ProcStreamArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}
AGENT_KINDS.update({StreamFrame.KIND: StreamFrame, "stream_end": StreamEnd})

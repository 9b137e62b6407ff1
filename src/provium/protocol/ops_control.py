"""Wire types of the session's rarer messages: a refused handshake (`hello_err`) and the
multiplexer's control messages (`cancel`, `credit`; our transport, see docs/protocol.md).
Imported when the first of them is sent or received (see kinds.py); the session
itself answers them, so the agent has no handler module for this family."""

from dataclasses import dataclass

from .codec import ANY

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


@dataclass
class HelloErr:
    """Agent -> host: the protocol versions differ."""

    KIND = "hello_err"
    host_version: int
    agent_version: int


@dataclass
class Cancel:
    """Host -> agent: forget this channel (stop its stream, drop its late reply)."""

    KIND = "cancel"


@dataclass
class Credit:
    """Host -> agent: the host consumed `bytes` of this stream channel; send more."""

    KIND = "credit"
    bytes: int


OPS: "list[Any]" = []  # no op of this module has a reply of its own
HOST_KINDS: "dict[str, Any]" = {Cancel.KIND: Cancel, Credit.KIND: Credit}
AGENT_KINDS: "dict[str, Any]" = {HelloErr.KIND: HelloErr}

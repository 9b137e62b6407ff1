"""The channel envelope of our transport: `{"ch": n, "kind": k, "data": d}`.

The reference opens one vsock connection per op; we carry every op over one
virtio-serial byte stream, so each frame names its channel.  Channel 0 is the
control channel (hello, and errors that cannot be pinned on a channel).
"""

from dataclasses import dataclass

from .codec import ANY, WireError, decode, encode
from .kinds import agent_type, host_type

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any

CONTROL = 0


@dataclass
class Envelope:
    """One frame's content: channel, kind and data."""

    ch: int
    kind: str
    data: Any = None

    def to_wire(self) -> dict:
        return {"ch": self.ch, "kind": self.kind, "data": encode(self.data)}


def _split(value: Any) -> tuple[int, str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"envelope: expected a map, got {type(value).__name__}")
    ch = value.get("ch")
    if isinstance(ch, bool) or not isinstance(ch, int) or ch < 0:
        raise WireError("envelope: `ch` must be a non-negative integer")
    kind = value.get("kind")
    if not isinstance(kind, str):
        raise WireError(f"envelope: channel {ch}: `kind` must be a string")
    return ch, kind, value.get("data")


def decode_host(value: Any) -> Envelope:
    """Decode a frame the host sent.  Raises WireError (with `.ch` when known)."""
    ch, kind, data = _split(value)
    tp = host_type(kind)
    try:
        if tp is None:
            raise WireError(f"unknown op kind `{kind}`")
        return Envelope(ch, kind, decode(tp, data, kind))
    except WireError as exc:
        exc.ch = ch  # type: ignore[attr-defined]
        raise


def decode_agent(value: Any) -> Envelope:
    ch, kind, data = _split(value)
    tp = agent_type(kind)
    try:
        if tp is None:
            raise WireError(f"unknown reply kind `{kind}`")
        return Envelope(ch, kind, decode(tp, data, kind))
    except WireError as exc:
        exc.ch = ch  # type: ignore[attr-defined]
        raise

"""The host<->agent wire: framing, message types, channel envelope.

Imports nothing else from provium, so the guest agent can carry it alone.
"""

from .codec import WireError, decode, encode
from .envelope import CONTROL, Envelope, decode_agent, decode_host
from .decoder import FrameDecoder
from .framing import (
    MAX_FRAME,
    CleanEof,
    DecodeError,
    FrameError,
    FrameTooLarge,
    UnexpectedEof,
    encode_frame,
    read_frame,
)
from .messages import *  # noqa: F401,F403  (the op/reply dataclasses are the API)
from .messages import AGENT_KINDS, HOST_KINDS, OPS, PROTOCOL_VERSION, STREAM_KINDS
from .types import *  # noqa: F401,F403

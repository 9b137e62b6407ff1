"""The host<->agent wire: framing, message types, channel envelope.

Imports nothing else from provium, so the guest agent can carry it alone.

Only the framing and the codec load with the package: the op/reply dataclasses
(`messages`, `types`, `envelope`) are a few hundred classes, and the event
stream (`provium.events`, on the CLI's start-up path) needs only the framing.
They load on first use of one of their names (`provium.protocol.Exec`), or
when imported directly (`from provium.protocol.messages import Exec`).
"""

from __future__ import annotations

from .codec import WireError, decode, encode
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

# Not `typing.TYPE_CHECKING`: the agent does not import typing (tests/unit/test_agent_startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .envelope import CONTROL, Envelope, decode_agent, decode_host  # noqa: F401
    from .messages import *  # noqa: F401,F403  (the op/reply dataclasses are the API)
    from .messages import AGENT_KINDS, HOST_KINDS, OPS, PROTOCOL_VERSION, STREAM_KINDS  # noqa: F401
    from .types import *  # noqa: F401,F403

# Where the lazily loaded names live, searched in this order (the order the
# star imports used to shadow each other in: later wins).
_LAZY = ("types", "messages", "envelope")
# Submodules: `from . import kinds` asks this module for the attribute before it
# imports the submodule, and must not load everything above on the way.
_SUBMODULES = frozenset({"codec", "core", "decoder", "envelope", "framing", "kinds", "messages", "mux", "types",
                         "views", "wire", "ops_batch", "ops_clock", "ops_control", "ops_files", "ops_procs", "ops_streams",
                         "ops_syscalls", "ops_workers"})


def __getattr__(name: str) -> object:
    """A name of `envelope`, `messages` or `types`, loaded on first use (PEP 562)."""
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(name)
    import importlib

    for sub in _LAZY:
        mod = importlib.import_module(f"{__name__}.{sub}")
        if name in vars(mod) and not name.startswith("_"):
            value = vars(mod)[name]
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

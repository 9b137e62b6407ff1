"""Which function answers which op kind.

Short ops: `handler(ctx, op) -> payload` (the reply kind is `op.REPLY[0]`).
Stream ops: `opener(ctx, op) -> (ack, pump)`; the server sends the ack and,
when it is ok, runs `pump(ctx)` on the same thread to push frames.

Each op family's handlers live in the module of the same name (`files`, `procs`,
`streams`, `clock`, `syscalls`, `workers`, `batch`), imported when the first op
of that family arrives, as its wire types are (provium.protocol.kinds): the
agent's start builds only what the handshake needs.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any, Callable

from provium.protocol.kinds import HOST

from .base import BAD_REQUEST, AgentFail

# The op families that have handlers here (the rest, `core`, the session answers itself).
FAMILIES = frozenset({"files", "procs", "streams", "clock", "syscalls", "workers", "batch"})

HANDLERS: dict[str, Callable[[Any, Any], Any]] = {}
STREAM_OPENERS: dict[str, Callable[[Any, Any], tuple]] = {}


def load(family: str) -> None:
    """Import the handlers of op family `family` (once; concurrent first ops of a
    family wait on the import system's per-module lock)."""
    name = f"{__package__}.{family}"
    # __import__ even when the module is in sys.modules: while another thread is still
    # importing it, only the import system waits for it to finish.  Not importlib:
    # the agent's start leaves it out.
    __import__(name)
    mod = sys.modules[name]
    # setdefault: an entry already there (a test's stand-in) stays
    for kind, handler in getattr(mod, "HANDLERS", {}).items():
        HANDLERS.setdefault(kind, handler)
    for kind, opener in getattr(mod, "OPENERS", {}).items():
        STREAM_OPENERS.setdefault(kind, opener)


def _find(table: dict, kind: str) -> Any:
    fn = table.get(kind)
    if fn is None:
        family = HOST.get(kind)
        if family in FAMILIES:
            load(family)
            fn = table.get(kind)
    return fn


def call(ctx: Any, kind: str, op: Any) -> tuple[str, Any]:
    handler = _find(HANDLERS, kind)
    if handler is None:
        raise AgentFail(BAD_REQUEST, f"`{kind}` is not an op this agent runs")
    return op.REPLY[0], handler(ctx, op)


def open_stream(ctx: Any, kind: str, op: Any) -> tuple[str, Any, Any]:
    ack, pump = _find(STREAM_OPENERS, kind)(ctx, op)
    return op.REPLY[0], ack, pump

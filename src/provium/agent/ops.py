"""Which function answers which op kind.

Short ops: `handler(ctx, op) -> payload` (the reply kind is `op.REPLY[0]`).
Stream ops: `opener(ctx, op) -> (ack, pump)`; the server sends the ack and,
when it is ok, runs `pump(ctx)` on the same thread to push frames.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any, Callable

from provium.protocol.messages import HOST_KINDS

from . import batch, clock, files, procs, streams, syscalls, workers
from .base import BAD_REQUEST, AgentFail

HANDLERS: dict[str, Callable[[Any, Any], Any]] = {}
STREAM_OPENERS: dict[str, Callable[[Any, Any], tuple]] = {}

for _mod in (files, procs, clock, syscalls, workers, batch):
    HANDLERS.update(_mod.HANDLERS)
STREAM_OPENERS.update(streams.OPENERS)


def call(ctx: Any, kind: str, op: Any) -> tuple[str, Any]:
    handler = HANDLERS.get(kind)
    if handler is None:
        raise AgentFail(BAD_REQUEST, f"`{kind}` is not an op this agent runs")
    return HOST_KINDS[kind].REPLY[0], handler(ctx, op)


def open_stream(ctx: Any, kind: str, op: Any) -> tuple[str, Any, Any]:
    ack, pump = STREAM_OPENERS[kind](ctx, op)
    return HOST_KINDS[kind].REPLY[0], ack, pump

"""batch_exec and batch_op: several requests in one round trip, run in order.

Items run one after another (a later item may depend on an earlier one, e.g.
write a file then stat it); each gets its own answer, and one failing item
does not stop the rest.
"""

from __future__ import annotations

from provium.protocol.core import AgentError
from provium.protocol.kinds import STREAM_KINDS
from provium.protocol.ops_batch import AgentMessage, BatchExecResult, BatchOpResult

from .base import BAD_REQUEST, INTERNAL, AgentFail, log
from .procs import exec_

# Kinds that cannot be answered by a single reply inside a batch.
_NOT_IN_BATCH = STREAM_KINDS | {"hello", "batch_op", "batch_exec", "cancel", "credit"}


def batch_exec(ctx, op):
    results = []
    for item in op.items:
        if ctx.cancelled:
            break  # nobody is waiting for the rest
        results.append(exec_(ctx, item))
    return BatchExecResult(results=results)


def batch_op(ctx, op):
    from . import ops  # ops imports this module

    responses = []
    for item in op.items:
        if item.kind in _NOT_IN_BATCH:
            responses.append(AgentMessage("agent_error", AgentError(
                BAD_REQUEST, f"`{item.kind}` cannot appear inside a batch")))
            continue
        try:
            kind, payload = ops.call(ctx, item.kind, item.data)
            responses.append(AgentMessage(kind, payload))
        except AgentFail as exc:
            responses.append(AgentMessage("agent_error", AgentError(exc.kind, exc.message)))
        except Exception as exc:
            log(f"batch item {item.kind} failed: {type(exc).__name__}: {exc}")
            responses.append(AgentMessage("agent_error", AgentError(
                INTERNAL, f"{item.kind}: {type(exc).__name__}: {exc}")))
    return BatchOpResult(responses=responses)


HANDLERS = {"batch_exec": batch_exec, "batch_op": batch_op}

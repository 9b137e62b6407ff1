"""Errors raised by the host model.

Every error a test author can cause or see is a `ProviumError`; its message is
the whole story (what, which object, what would be valid), so callers can show
`str(err)` without a traceback.  The wording follows the reference where its
tests grep for phrases (`VM not booted`, `cannot run`, `os: ...`, `agent: ...`).
"""

from __future__ import annotations

from ..errors import (  # noqa: F401  (re-exported: the families live in provium.errors)
    ArgumentError,
    CheckFailed,
    GuestError,
    NotYetImplemented,
    ProtocolError,
    ProviumError,
    StateError,
    VmmError,
)


class SessionError(StateError):
    """The session cannot run the request (closed, misused, timed out)."""


class Interrupted(SessionError):
    """A blocking call was cancelled by `Session.interrupt()` (e.g. a test timeout)."""


class VmError(ProviumError):
    """Something about one VM failed."""


_STATE_BODY = {
    "created": "VM not booted",
    "paused": "VM is paused; use resume()",
    "shutdown": "VM is shutdown; create a new one",
    "dead": "VM died; create a new one",
}


class WrongState(VmError, StateError):
    """The op is not legal in the VM's current state.

    Message shape (the reference's): ``vm `NAME`: BODY (cannot ACTION)``.
    """

    def __init__(self, vm_name: str, state: str, action: str, why: str | None = None) -> None:
        state = str(state)  # a VmState shows its value
        self.vm_name = vm_name
        self.state = state
        self.action = action
        if state == "booted" and action in ("boot", "merge_boot_opts", "restore"):
            body = "VM already booted"
        elif state == "booting":
            body = "VM is already booting" if action in ("boot", "merge_boot_opts") else "VM not booted"
        else:
            body = _STATE_BODY.get(state, "VM is in an unexpected state for this op")
        # `why`: how the VM got into this state, when provium did it (e.g. a test timeout).
        super().__init__(f"vm `{vm_name}`: {body} (cannot {action})" + (f": {why}" if why else ""))


class AgentCommError(VmError, ProtocolError):
    """Talking to the agent failed, or it answered with an agent error ("agent: ...")."""


class NoAgent(VmError, StateError):
    """The VM's profile boots without the agent (`inject_agent = false`): no guest ops."""


class AgentGone(AgentCommError):
    """The connection to the agent broke; the VM is now `dead`."""


class VmmFailure(VmError, VmmError):
    """The VMM backend failed or does not implement the request ("vmm: ...")."""


class GuestOsError(VmError, GuestError):
    """The guest OS refused an operation ("os: ..."); `errno` holds the number."""

    def __init__(self, message: str, errno: int = 0) -> None:
        self.errno = errno
        super().__init__(message)


class HandleError(StateError):
    """A handle (file, process, worker, pending call) cannot do this any more."""


class StreamError(CheckFailed):
    """A stream read did not find what it waited for."""


class StreamTimeout(StreamError):
    """The stream did not deliver what was awaited in time."""


class StreamEof(StreamError):
    """The stream ended before delivering what was awaited."""


class StreamClosed(StreamError):
    """The stream was closed by this side."""


class CommandFailed(CheckFailed):
    """`RunResult.assert_ok()` on a command that did not exit 0."""

    def __init__(self, message: str, result: object = None) -> None:
        self.result = result
        super().__init__(message)

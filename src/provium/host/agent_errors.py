"""How failures below the host model become the errors a test author sees.

The channel client (`protocol/mux.py`) and the VMM raise their own errors;
the host model re-words them once, here, with the VM's name and the op in
front and the original kept as the cause:

* the agent refused a request     -> `AgentCommError` ("agent: ...")
* the connection to the agent broke -> `AgentGone` (the VM is now dead)
* an OS call in the guest failed  -> `GuestOsError` ("os: ... (errno N)")
* the VMM failed                  -> text prefixed "vmm: "
"""

from __future__ import annotations

from typing import Callable

from ..protocol.mux import AgentFailure, ClientError, ConnectError, ConnectionLost, FrameClientError
from ..protocol.types import OsError
from .errors import AgentCommError, GuestOsError, ProviumError

# The connection itself is gone (as opposed to one request failing).
CONNECTION_GONE = (ConnectionLost, ConnectError, FrameClientError)


def os_error_text(action: str, err: OsError) -> str:
    """The agent's error display, with our context in front unless the agent's
    message already names the subject (it usually does: "stat: /x: ...")."""
    start, end = action.find("`"), action.rfind("`")
    subject = action[start + 1:end] if 0 <= start < end else None
    if subject and subject in err.message:
        return str(err)
    return f"{action}: {err}"


def os_error(action: str, err: OsError) -> GuestOsError:
    """`os: <message> (errno N)`."""
    return GuestOsError(f"os: {os_error_text(action, err)}", errno=err.errno)


def client_error(exc: ClientError, gone: Callable[[ClientError], ProviumError]) -> ProviumError:
    """The host error for a failed request; `gone` words a lost connection
    (the VM decides what that means for its state)."""
    if isinstance(exc, AgentFailure):
        return AgentCommError(f"agent: {exc}")
    if isinstance(exc, CONNECTION_GONE):
        return gone(exc)
    return AgentCommError(str(exc))


def vmm_text(exc: BaseException) -> str:
    """The text of a VMM failure, "vmm: ..." exactly once."""
    text = str(exc) or type(exc).__name__
    return text if text.startswith("vmm:") else f"vmm: {text}"

"""Small pieces every op module shares: agent errors, OS-error results, logging.

Kept free of heavy imports: this module loads on every agent start.
"""

from __future__ import annotations

import sys

from provium.errors import ProtocolError
from provium.protocol.core import AgentErrorKind, OpResult

# Set by the guest agent once it made itself immune to the guest's OOM killer
# (guest.protect_from_oom); never on the local backend, where it runs on the host.
# Here rather than in children.py (which reads it): the guest sets it at start-up,
# and the process machinery loads with the first process op.
OOM_PROTECTED = False

BAD_REQUEST = AgentErrorKind.BAD_REQUEST
UNSUPPORTED = AgentErrorKind.UNSUPPORTED
UNKNOWN_HANDLE = AgentErrorKind.UNKNOWN_HANDLE
INTERNAL = AgentErrorKind.INTERNAL


class AgentFail(ProtocolError):
    """Raised by an op to answer `agent_error{kind, message}` instead of its result.

    Used for requests that are wrong as requests (unknown handle, bad
    arguments); an OS call that fails is data, returned as `OpResult` err.
    """

    def __init__(self, kind: AgentErrorKind | str, message: str) -> None:
        super().__init__(message)
        self.kind = AgentErrorKind(kind)
        self.message = message


class WithFds:
    """A handler's reply that carries open descriptors along (SCM_RIGHTS).

    Only a worker answers this way, to hand its parent a file it opened with
    its own credentials; the server sends the descriptors with the reply frame
    and closes its copies afterwards.
    """

    __slots__ = ("payload", "fds")

    def __init__(self, payload, fds: list[int]) -> None:
        self.payload = payload
        self.fds = fds


def log(message: str) -> None:
    """One line to stderr (the guest console, or the local backend's log)."""
    try:
        sys.stderr.write(f"provium-agent[{_pid()}]: {message}\n")
        sys.stderr.flush()
    except Exception:  # stderr gone: nothing sensible left to do
        pass


def _pid() -> int:
    import os

    return os.getpid()


def os_fail(op: str, exc: OSError, what: str | None = None) -> OpResult:
    """An OSError as an `err` outcome: `<op>: <what>: <strerror>` with its errno."""
    errno = exc.errno if isinstance(exc.errno, int) else 0
    reason = exc.strerror or str(exc) or type(exc).__name__
    if what is None and getattr(exc, "filename", None) is not None:
        what = str(exc.filename)
    text = f"{op}: {what}: {reason}" if what else f"{op}: {reason}"
    return OpResult.failure(errno, text)


def unknown(op: str, kind: str, handle: int) -> AgentFail:
    """The agent_error for a handle that is not (or no longer) in its table."""
    label = {"file": "file", "process": "proc", "worker": "worker"}[kind]
    return AgentFail(UNKNOWN_HANDLE, f"{op}: unknown {kind} handle {label}#{handle}")

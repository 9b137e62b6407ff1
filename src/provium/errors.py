"""The root of every error provium raises, and the families beneath it.

Every exception class under `provium` derives from `ProviumError`, so a caller
(the CLI, the Lua layer, a pytest user) can catch "anything provium refused"
with one `except` and classify with `isinstance`, never by class name.  An
error's message is the whole story for a user: what was called, with what,
what would be valid and what was seen.  A wrapped error keeps its cause
(`raise ... from exc`), so `PROVIUM_DEBUG=1` can show the chain while the CLI
still prints one line.

The families say *what kind* of thing went wrong; the concrete classes live
next to the code that raises them (`host/errors.py`, `protocol/framing.py`,
`vmm/base.py`, ...) and derive from one family.  A host error about one VM
also derives from `host.errors.VmError`, which says *where*.

    ProviumError
    ├── ConfigError        provium.toml, run settings, command-line input, test discovery
    ├── HostSetupError     the host machine lacks something (preflight)
    ├── ImageError         building or finding guest images (kernel, initrd, overlay, cpio)
    ├── VmmError           the VMM (QEMU, QMP, the local backend) failed or lacks a feature
    ├── ProtocolError      bytes between processes: frames, wire values, the agent channel,
    │                      the agent refusing a request, event and result streams
    ├── GuestError         the guest OS refused an operation (errno)
    ├── ArgumentError      a call got a bad argument (also a ValueError)
    ├── StateError         an object cannot do this now (VM state, closed session/handle)
    ├── CheckFailed        something a test waited for or asserted did not happen
    ├── TestFileError      a test file could not be compiled or its top level raised
    └── NotYetImplemented  a documented feature this version does not provide

This module imports nothing from provium: the wire protocol and the guest
agent import it (the agent overlay ships it).  For the same reason it holds
`requires`, the guard that refuses a method in the wrong lifecycle state: the
VM, the channel client and the agent session all use it.
"""

from __future__ import annotations

import functools
import operator

TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


class ProviumError(Exception):
    """Base of every error provium raises."""


class ConfigError(ProviumError):
    """Configuration or command-line input could not be read, parsed or validated."""


class HostSetupError(ProviumError):
    """The host cannot run the requested guests; the message says how to fix it."""


class ImageError(ProviumError):
    """An image could not be built or found; the message says what to do about it."""


class VmmError(ProviumError):
    """The VMM could not do what was asked (launch, QMP, ...)."""


class ProtocolError(ProviumError):
    """Bytes between two provium processes were wrong, lost, or refused."""


class GuestError(ProviumError):
    """The guest OS refused an operation."""


class ArgumentError(ProviumError, ValueError):
    """A method got a bad argument.  The message names the method, the argument
    and what would have been valid."""


class StateError(ProviumError):
    """The object is not in a state that allows this (not booted, closed, gone...)."""


class CheckFailed(ProviumError):
    """Something a test waited for or asserted did not happen."""


class TestFileError(ProviumError):
    """A test file could not be compiled, or its top level raised."""

    __test__ = False  # not a pytest class


class NotYetImplemented(ProviumError):
    """A documented part of the API that this version does not provide yet.

    Message: ``WHAT is not yet implemented`` followed by `detail` if given.
    """

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        super().__init__(f"{what} is not yet implemented" + (f" {detail}" if detail else ""))


FAMILIES: tuple[type[ProviumError], ...] = (
    ConfigError, HostSetupError, ImageError, VmmError, ProtocolError, GuestError,
    ArgumentError, StateError, CheckFailed, TestFileError, NotYetImplemented,
)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect into the agent


def requires(*states: object, action: str | None = None, attr: str = "state") -> "Callable[[F], F]":
    """Method decorator: run only while `self.state` is one of `states`.

    Otherwise raise what `self._wrong_state(action)` returns (each class words
    its own refusal: the VM's says "VM not booted (cannot run)").  `action`
    defaults to the method's name.  Works on plain and `async` methods; an async
    method is checked when it starts running, not when the coroutine is made.
    `attr` names another attribute holding the lifecycle (the agent session
    keeps it in `phase`: its `state` is the agent's handle tables).
    """
    allowed = frozenset(states)
    get = operator.attrgetter(attr)

    def deco(fn: "F") -> "F":
        name = action or fn.__name__
        if fn.__code__.co_flags & _CO_COROUTINE:
            @functools.wraps(fn)
            async def guarded_async(self: "Any", *args: "Any", **kw: "Any") -> "Any":
                if get(self) not in allowed:
                    raise self._wrong_state(name)
                return await fn(self, *args, **kw)

            guarded_async.required_states = allowed  # type: ignore[attr-defined]
            return guarded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(self: "Any", *args: "Any", **kw: "Any") -> "Any":
            if get(self) not in allowed:
                raise self._wrong_state(name)
            return fn(self, *args, **kw)

        guarded.required_states = allowed  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return deco

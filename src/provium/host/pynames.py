"""Error messages in the caller's language: `vm:run` for Lua, `VM.run` for Python.

The host layer words its messages once, the way the Lua API names its methods
(``vm:write_file: unknown option `x` (valid: mode, perm)``): that text is what
Lua test authors have always seen, and it stays exactly so.  A Python caller
sees the same message with Python's names (``VM.write_file: unknown option
...``): every public method of the public classes is wrapped by
`@python_names`, and when a `ProviumError` leaves it while no Lua code is the
caller, the `object:method` names in its text (and in the provium errors it
was raised from) are rewritten to `Class.method`.

Who the caller is travels in a context variable: the Lua layer sets it around
every call from Lua into Python (`lua/runtime.py`), and the runner around a
whole test file (its own teardown speaks to the Lua author too).  Nothing is
rewritten for Lua, so the Lua wording cannot drift; a rewrite is idempotent,
so nested public calls are harmless.

Only the text before a guest console excerpt is rewritten: the guest's own
bytes are quoted as they were.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import ProviumError

# Lua's object names (the Binding KINDs in lua/) -> the Python classes a user may
# hold for it (module under provium.host, classes tried in order).
CLASSES = {
    "vm": ("vm", "VM"), "lab": ("lab", "Lab"), "bridge": ("bridge", "Bridge"), "nic": ("bridge", "Nic"),
    "disk": ("disk", "Disk"), "file": ("file", "File"), "proc": ("process", "Process"),
    "worker": ("worker", "Worker"), "console": ("console", "Console", "ConsoleStream"),
    "clock": ("clock", "Clock"), "batch": ("batch", "Batch"), "stream": ("streams", "Stream", "Tail"),
}
_NAME = re.compile(r"(?<![\w.:/-])(" + "|".join(CLASSES) + r"):([A-Za-z_]\w*)")
_QUOTED_FROM = "--- guest console"

LUA_CALLER: contextvars.ContextVar[bool] = contextvars.ContextVar("proviumLUA_CALLER", default=False)

T = TypeVar("T", bound=type)


def _python_name(m: re.Match[str]) -> str:
    module, *names = CLASSES[m[1]]
    found = importlib.import_module(f"provium.host.{module}")
    for name in names:
        # Only a method the Python class has: `disk:a` naming a disk's owner stays as it is.
        if hasattr(getattr(found, name), m[2]):
            return f"{name}.{m[2]}"
    return m[0]


def python_text(text: str) -> str:
    """`text` with Lua's `object:method` names written as Python's `Class.method`."""
    cut = text.find(_QUOTED_FROM)
    head, tail = (text, "") if cut < 0 else (text[:cut], text[cut:])
    return _NAME.sub(_python_name, head) + tail


def lua_caller() -> bool:
    return LUA_CALLER.get()


@contextmanager
def called_from_lua() -> Iterator[None]:
    """Everything inside is on behalf of Lua code: messages keep their Lua names."""
    token = LUA_CALLER.set(True)
    try:
        yield
    finally:
        LUA_CALLER.reset(token)


def to_python(exc: BaseException) -> None:
    """Rewrite the names in `exc` and the provium errors it came from, in place."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while isinstance(e, ProviumError) and id(e) not in seen:
        seen.add(id(e))
        if e.args and isinstance(e.args[0], str):
            e.args = (python_text(e.args[0]), *e.args[1:])
        e = e.__cause__ or e.__context__


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except ProviumError as exc:
            if not LUA_CALLER.get():
                to_python(exc)
            raise

    return method


def python_names(cls: T) -> T:
    """Class decorator: the public methods of `cls` give Python callers Python's names."""
    for name, attr in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(attr) or inspect.iscoroutinefunction(attr):
            continue
        setattr(cls, name, _wrap(attr))
    return cls

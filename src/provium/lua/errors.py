"""Errors of the Lua layer and how any exception becomes a Lua error message.

Whatever goes wrong inside a Python function called from Lua reaches the test
author as one line of text: the Lua side prefixes it with `file:line:`.  A
Python traceback is never part of it; an unexpected exception (a bug in
provium, not in the test) is still shown as one line naming its type, and the
traceback goes to stderr only when PROVIUM_DEBUG is set.
"""

from __future__ import annotations

import os
import sys
import traceback

from ..errors import ArgumentError, NotYetImplemented, ProviumError, TestFileError

__all__ = ["LuaApiError", "NotYetImplemented", "PositionedError", "message_of"]


class LuaApiError(ArgumentError):
    """A Lua-facing call got something it cannot use (wrong type, unknown key,
    dot-call instead of colon-call...).  The message says which method and what
    would be valid."""


class PositionedError(TestFileError):
    """An error whose text already starts with the `file:line:` it belongs to (a held
    top-level boot that failed later, see deferboot.py): raised to Lua as it is."""


def message_of(exc: BaseException) -> str:
    """The one-line (or few-line) text a test author sees for `exc`."""
    from lupa import LuaError

    if isinstance(exc, LuaError):
        # Already a Lua error (raised by Lua code we called back into): keep its text.
        return str(exc)
    if isinstance(exc, ProviumError):
        # Every provium error's text is meant for the user as it is.
        text = str(exc)
        return text or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "nesting too deep (Python recursion limit reached)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if os.environ.get("PROVIUM_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    detail = str(exc)
    return f"internal error ({type(exc).__name__}{': ' + detail if detail else ''})"

"""Lua's names for Python values' types, for error messages ("got a table").

The one place these names are decided.  It lives at the package root, importing
nothing from provium, because layers that must not import `host/` (`disk/`,
`net/`) name types in their messages too; `host.values` re-exports both
functions, and the Lua layer's `lua_type` starts from `plain_type_name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plain_type_name(value: Any) -> str | None:
    """Lua's name for a value Lua and Python share (nil, boolean, number, string), else None."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, bytes)):
        return "string"
    return None


def type_name(value: Any) -> str:
    """The Lua-flavoured name of a value's type, for error messages."""
    name = plain_type_name(value)
    if name is not None:
        return name
    if isinstance(value, bytearray):
        return "string"
    if isinstance(value, (Mapping, list, tuple)) or "LuaTable" in type(value).__name__:
        return "table"
    if callable(value):
        return "function"
    return type(value).__name__

"""Lua-flavoured names of values' types, for error messages.

A leaf module (no provium imports) so that `host/`, `disk/` and `net/` name
types the same way.  Types are told apart with `isinstance` and lupa's own
`lua_type()`, never by class or module name (a test greps the tree for that).

lupa is not imported here: `import provium.host` stays free of it for Python
users, and a Lua table can only reach us once the Lua layer has loaded lupa,
so "lupa not loaded" means "not a Lua value".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

LUPA_MODULE = "lupa.lua54"


def plain_type_name(value: Any) -> str | None:
    """Lua's name for a value Lua and Python share (nil, boolean, number, string), else None.

    The one place these names are decided: `type_name` below and the Lua layer's
    `lua_type` (which names lupa's objects and calls other Python objects userdata)
    both start here.
    """
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, bytes)):
        return "string"
    return None


def lupa_type(value: Any) -> str | None:
    """What Lua's `type()` says of an object lupa handed to Python ("table",
    "function", ...); None for anything else, or when lupa is not loaded."""
    lupa = sys.modules.get(LUPA_MODULE)
    return None if lupa is None else lupa.lua_type(value)


def type_name(value: Any) -> str:
    """The Lua-flavoured name of a value's type, for error messages."""
    name = plain_type_name(value)
    if name is not None:
        return name
    if isinstance(value, bytearray):
        return "string"
    if isinstance(value, (Mapping, list, tuple)):
        return "table"
    kind = lupa_type(value)
    if kind is not None:
        return kind
    if callable(value):
        return "function"
    return type(value).__name__  # a Python object: its class name is the best description

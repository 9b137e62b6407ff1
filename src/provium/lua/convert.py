"""Moving values between Lua (through lupa) and Python.

The runtime is created with `encoding=None`, so every Lua string arrives in
Python as `bytes` (binary-safe: NULs and non-UTF-8 bytes survive).  Text
arguments (paths, commands, names) are decoded here with a clear error when
they are not UTF-8; byte arguments (file contents, stdin) stay bytes.
"""

from __future__ import annotations

import math
from typing import Any

import lupa.lua54 as lupa_mod

from ..typenames import plain_type_name
from .binding import Binding
from .errors import LuaApiError

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


_THREAD_TYPES: tuple[type, ...] = ()


def _thread_types() -> tuple[type, ...]:
    """lupa's classes for a coroutine (started or not).  lupa does not export them by
    name, so they are taken once from a throwaway runtime instead of matched by name."""
    global _THREAD_TYPES
    if not _THREAD_TYPES:
        rt = lupa_mod.LuaRuntime()
        fresh = rt.eval("coroutine.create(function() end)")
        _THREAD_TYPES = (type(fresh), type(rt.eval("function() end").coroutine()))
    return _THREAD_TYPES


def lua_type(value: Any) -> str:
    """The name Lua's `type()` would give the value as seen from Python."""
    name = plain_type_name(value)
    if name is not None:
        return name
    if isinstance(value, _thread_types()):
        return "thread"  # lupa hands a not-yet-started coroutine over as a "coroutine function"
    kind = lupa_mod.lua_type(value)
    if kind is not None:
        return kind
    return "userdata"  # a Python object handed to Lua


def is_table(value: Any) -> bool:
    return lupa_mod.lua_type(value) == "table"


def is_function(value: Any) -> bool:
    return lua_type(value) == "function"


def text(value: bytes | str, what: str) -> str:
    """A Lua string that must be text (a path, a name, a command)."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise LuaApiError(f"{what} must be valid UTF-8 text") from None


def key_text(key: Any) -> str | None:
    """A table key as text if it is a string key, else None."""
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(key, str):
        return key
    return None


def table_items(tbl: Any) -> list[tuple[Any, Any]]:
    return list(tbl.items())


def sequence_length(tbl: Any) -> int:
    """Lua's `#t` (the border lupa reports)."""
    return len(tbl)


def is_integral_key(k: Any) -> bool:
    if isinstance(k, bool):
        return False
    if isinstance(k, int):
        return True
    return isinstance(k, float) and math.isfinite(k) and k.is_integer()


def meta_value(value: Any, depth: int = 0) -> Any:
    """A Lua value as an event MetaValue (meta-tags.md: nil/bool/int/float/str/bytes,
    a table with `#t > 0` is an array of t[1..#t], any other table is a map of its
    string keys; functions, userdata and threads become nil)."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if I64_MIN <= value <= I64_MAX else float(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, str):
        return value
    if is_table(value) and depth < 32:
        n = len(value)
        if n > 0:
            return [meta_value(value[i], depth + 1) for i in range(1, n + 1)]
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = key_text(k)
            if name is not None:
                out[name] = meta_value(v, depth + 1)
        return dict(sorted(out.items()))
    return None


def meta_map(value: Any) -> dict[str, Any]:
    """The top-level meta table of a test as a MetaMap (string keys only)."""
    if not is_table(value):
        return {}
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = key_text(k)
        if name is not None:
            out[name] = meta_value(v, 1)
    return dict(sorted(out.items()))


class EmptyTable(dict):
    """An empty Lua table: both an empty map and an empty list, since Lua cannot
    tell `{}`-as-array from `{}`-as-object."""

    def __repr__(self) -> str:
        return "{}"


def _register_empty() -> None:
    from collections.abc import Sequence

    Sequence.register(EmptyTable)


_register_empty()


def to_py(value: Any, *, empty: str = "both", depth: int = 0) -> Any:
    """A Lua value as plain Python for the host API.

    Strings become `str` when they are UTF-8 (host methods accept str for text
    and re-encode it for data, losslessly) and stay `bytes` otherwise; a table
    whose keys are exactly 1..n becomes a list, any other table a dict; an
    empty table becomes `empty` ("dict", "list" or "both" = `EmptyTable`);
    a provium object becomes the host object it stands for.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    host = getattr(value, "host", None)
    if host is not None and isinstance(value, Binding):
        return host
    if is_table(value):
        if depth > 64:
            raise LuaApiError("table nested too deeply (more than 64 levels)")
        items = list(value.items())
        if not items:
            return {} if empty == "dict" else [] if empty == "list" else EmptyTable()
        n = len(items)
        if all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n for k, _ in items):
            out = [None] * n
            for k, v in items:
                out[k - 1] = to_py(v, depth=depth + 1)
            return out
        d = {}
        for k, v in items:
            kk = to_py(k, depth=depth + 1) if isinstance(k, bytes) else k
            d[kk] = to_py(v, depth=depth + 1)
        return d
    return value

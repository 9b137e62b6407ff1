"""Checking the arguments a Lua script passes to a method.

Every message names the method, the argument (position and name) and what was
expected, e.g. ``vm:read_file: argument #1 (path) must be a string, got number``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Sequence, overload

from .convert import is_function, is_table, key_text, lua_type, text
from .errors import LuaApiError


class Args:
    def __init__(self, method: str, args: Sequence[Any], *, max_args: int | None = None) -> None:
        self.method = method
        self.args = tuple(args)
        if max_args is not None:
            # Trailing nils are what Lua passes for `f(a, nil)`; only real extra values count.
            n = len(self.args)
            while n > max_args and self.args[n - 1] is None:
                n -= 1
            if n > max_args:
                raise LuaApiError(f"{method}: expected at most {max_args} argument(s), got {n}")

    def __len__(self) -> int:
        return len(self.args)

    def get(self, i: int) -> Any:
        return self.args[i - 1] if i <= len(self.args) else None

    def fail(self, i: int, name: str, expected: str) -> LuaApiError:
        return LuaApiError(f"{self.method}: argument #{i} ({name}) must be {expected}, "
                           f"got {lua_type(self.get(i))}")

    @overload
    def string(self, i: int, name: str, *, optional: Literal[False] = ...) -> str: ...
    @overload
    def string(self, i: int, name: str, *, optional: bool) -> str | None: ...
    def string(self, i: int, name: str, *, optional: bool = False) -> str | None:
        v = self.get(i)
        if v is None and optional:
            return None
        if not isinstance(v, (bytes, str)):
            raise self.fail(i, name, "a string")
        return text(v, f"{self.method}: argument #{i} ({name})")

    def data(self, i: int, name: str, *, optional: bool = False) -> bytes | None:
        """A byte string (binary safe); numbers are not coerced."""
        v = self.get(i)
        if v is None and optional:
            return None
        if isinstance(v, str):
            return v.encode("utf-8")
        if not isinstance(v, bytes):
            raise self.fail(i, name, "a string")
        return v

    def integer(self, i: int, name: str, *, optional: bool = False, default: int | None = None) -> int | None:
        v = self.get(i)
        if v is None and optional:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(i, name, "an integer")
        if isinstance(v, float):
            if not (math.isfinite(v) and v.is_integer()):
                raise LuaApiError(f"{self.method}: argument #{i} ({name}) must be an integer, got {v!r}")
            v = int(v)
        return v

    def number(self, i: int, name: str, *, optional: bool = False) -> int | float | None:
        v = self.get(i)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(i, name, "a number")
        return v

    def boolean(self, i: int, name: str, *, optional: bool = False, default: bool | None = None) -> bool | None:
        v = self.get(i)
        if v is None and optional:
            return default
        if not isinstance(v, bool):
            raise self.fail(i, name, "a boolean")
        return v

    def table(self, i: int, name: str, *, optional: bool = False) -> Any:
        v = self.get(i)
        if v is None and optional:
            return None
        if not is_table(v):
            raise self.fail(i, name, "a table")
        return v

    def function(self, i: int, name: str) -> Any:
        v = self.get(i)
        if not is_function(v):
            raise self.fail(i, name, "a function")
        return v


def opts_dict(method: str, tbl: Any, valid: Iterable[str], *, what: str = "option") -> dict[str, Any]:
    """A Lua options table as {key: raw value}; an unknown or non-string key is an
    error that lists the valid keys."""
    valid = tuple(valid)
    out: dict[str, Any] = {}
    if tbl is None:
        return out
    if not is_table(tbl):
        raise LuaApiError(f"{method}: options must be a table, got {lua_type(tbl)}")
    for k, v in tbl.items():
        name = key_text(k)
        if name is None or name not in valid:
            shown = name if name is not None else repr(k)
            raise LuaApiError(f"{method}: unknown {what} `{shown}` (valid: {', '.join(sorted(valid))})")
        out[name] = v
    return out


def opt_string(method: str, opts: dict, key: str) -> str | None:
    v = opts.get(key)
    if v is None:
        return None
    if not isinstance(v, (bytes, str)):
        raise LuaApiError(f"{method}: option `{key}` must be a string, got {lua_type(v)}")
    return text(v, f"{method}: option `{key}`")


def opt_bool(method: str, opts: dict, key: str, default: bool = False) -> bool:
    v = opts.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise LuaApiError(f"{method}: option `{key}` must be a boolean, got {lua_type(v)}")
    return v


def opt_int(method: str, opts: dict, key: str) -> int | None:
    v = opts.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise LuaApiError(f"{method}: option `{key}` must be an integer, got {lua_type(v) if not isinstance(v, float) else repr(v)}")
    return int(v)


def string_list(method: str, value: Any, what: str) -> list[str]:
    """A Lua array of strings (t[1..#t]); any other key or element type is an error."""
    if not is_table(value):
        raise LuaApiError(f"{method}: `{what}` must be an array of strings, got {lua_type(value)}")
    n = len(value)
    out: list[str] = []
    for k, _ in value.items():
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise LuaApiError(f"{method}: `{what}` must be an array of strings (found key {k!r})")
    for i in range(1, n + 1):
        v = value[i]
        if not isinstance(v, (bytes, str)):
            raise LuaApiError(f"{method}: `{what}`[{i}] must be a string, got {lua_type(v)}")
        out.append(text(v, f"{method}: `{what}`[{i}]"))
    return out


def string_map(method: str, value: Any, what: str) -> dict[str, str]:
    if not is_table(value):
        raise LuaApiError(f"{method}: `{what}` must be a table of string to string, got {lua_type(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        name = key_text(k)
        if name is None or not isinstance(v, (bytes, str)):
            raise LuaApiError(f"{method}: `{what}` must map strings to strings "
                              f"(got {lua_type(k)} -> {lua_type(v)})")
        out[name] = text(v, f"{method}: `{what}`.{name}")
    return out

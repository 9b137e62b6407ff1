"""The `json` global: `json.encode(value)` and `json.decode(text)` (spec/json.md).

Encoding rules worth knowing:
* a table is an array when it has at least one key and every key is a positive
  integer (integral floats count); holes become `null`; anything else, and the
  empty table, is an object (`{}`);
* object keys: strings as they are, numbers in decimal (`3.0` -> "3"),
  booleans as "true"/"false"; keys come out sorted;
* NaN and infinities encode as `null`; output is compact (no spaces);
* functions, userdata and threads are refused, as are cycles.

Decoding keeps Lua's integer/float split: a JSON integer that fits in i64 is a
Lua integer, one in (i64 max, u64 max] wraps to the same 64-bit pattern, any
other number is a float.  `null` inside an object drops the key; inside an
array it leaves a hole.
"""

from __future__ import annotations

import json as _json
import math
from typing import Any

from .convert import is_integral_key, is_table, lua_type
from .errors import LuaApiError

I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)
U64_MAX = (1 << 64) - 1
MAX_DEPTH = 128
# An array is emitted with max(key) slots; refuse absurdly sparse ones rather
# than allocate gigabytes of nulls.
SPARSE_SLACK = 1024


def _fmt_float(x: float) -> str:
    """Shortest round-trip form, with exponents written like `1e16` / `1e-7`."""
    if x.is_integer() and abs(x) < 1e16:
        return f"{x:.1f}"
    r = repr(x)
    if "e" in r:
        mant, exp = r.split("e")
        sign = "-" if exp.startswith("-") else ""
        exp = exp.lstrip("+-").lstrip("0") or "0"
        return f"{mant}e{sign}{exp}"
    return r


def _key_string(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, bytes):
        return _text(k, "an object key")
    if isinstance(k, str):
        return k
    if isinstance(k, int):
        return str(k)
    if isinstance(k, float):
        if math.isfinite(k) and k.is_integer():
            return str(int(k))
        return _fmt_float(k)
    raise LuaApiError(f"json.encode: table key must be string, number, or boolean (got `{lua_type(k)}`)")


def _text(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise LuaApiError(f"json.encode: {what} is not valid UTF-8 (JSON strings must be text)") from None


def _string(s: str) -> str:
    return _json.dumps(s, ensure_ascii=False)


def encode(value: Any) -> bytes:
    out: list[str] = []
    _encode(value, out, set(), 0)
    return "".join(out).encode("utf-8")


def _encode(v: Any, out: list[str], seen: set[str], depth: int) -> None:
    if v is None:
        out.append("null")
    elif isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(_fmt_float(v) if math.isfinite(v) else "null")
    elif isinstance(v, bytes):
        out.append(_string(_text(v, "a string")))
    elif isinstance(v, str):
        out.append(_string(v))
    elif is_table(v):
        if depth >= MAX_DEPTH:
            raise LuaApiError(f"json.encode: tables nested deeper than {MAX_DEPTH} levels")
        ident = _table_identity(v)
        if ident in seen:
            raise LuaApiError("json.encode: cycle detected (a table contains itself)")
        seen.add(ident)
        try:
            _encode_table(v, out, seen, depth)
        finally:
            seen.discard(ident)
    else:
        raise LuaApiError(f"json.encode: unsupported value type `{lua_type(v)}`")


def _table_identity(t: Any) -> str:
    # The repr names the table's address ("<Lua table at 0x...>"), stable while it lives.
    return repr(t)


def _encode_table(t: Any, out: list[str], seen: set[str], depth: int) -> None:
    items = list(t.items())
    if items and all(is_integral_key(k) and k >= 1 for k, _ in items):
        top = int(max(k for k, _ in items))
        if top > 16 * len(items) + SPARSE_SLACK:
            raise LuaApiError(f"json.encode: array too sparse to encode (highest index {top}, "
                              f"{len(items)} element(s)); use string keys for a sparse map")
        slots: list[Any] = [None] * top
        for k, v in items:
            slots[int(k) - 1] = v
        out.append("[")
        for i, v in enumerate(slots):
            if i:
                out.append(",")
            _encode(v, out, seen, depth + 1)
        out.append("]")
        return
    pairs: dict[str, Any] = {}
    for k, v in items:
        pairs[_key_string(k)] = v
    out.append("{")
    for i, k in enumerate(sorted(pairs)):
        if i:
            out.append(",")
        out.append(_string(k))
        out.append(":")
        _encode(pairs[k], out, seen, depth + 1)
    out.append("}")


# ---- decode ------------------------------------------------------------------------


def _int(text: str) -> int | float:
    n = int(text)
    if I64_MIN <= n <= I64_MAX:
        return n
    if I64_MAX < n <= U64_MAX:
        return n - (1 << 64)  # same 64-bit pattern, like Lua's 0xFFFFFFFFFFFFFFFF
    return float(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not valid JSON")


def decode_py(data: bytes | str) -> Any:
    """Parse JSON to Python values (ints/floats kept apart, lone surrogates refused)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LuaApiError(f"json.decode: input is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return _json.loads(data, parse_int=_int, parse_constant=_no_constant)
    except _json.JSONDecodeError as exc:
        msg = exc.msg[:1].lower() + exc.msg[1:]
        raise LuaApiError(f"json.decode: {msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:
        raise LuaApiError(f"json.decode: {exc}") from exc
    except RecursionError:
        raise LuaApiError("json.decode: nesting too deep") from None


def to_lua(env: Any, v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise LuaApiError(f"json.decode: nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError:
            raise LuaApiError("json.decode: invalid \\u escape (lone surrogate)") from None
    if isinstance(v, list):
        t = env.rt.table()
        for i, item in enumerate(v, 1):
            if item is not None:
                t[i] = to_lua(env, item, depth + 1)
        return t
    if isinstance(v, dict):
        t = env.rt.table()
        for k, item in v.items():
            if item is not None:
                t[to_lua(env, k, depth + 1)] = to_lua(env, item, depth + 1)
        return t
    return v


def install(env: Any) -> None:
    """Set the global `json` table in `env` (a LuaEnv)."""

    def py_encode(*args: Any) -> bytes:
        return encode(args[0] if args else None)

    def py_decode(*args: Any) -> Any:
        s = args[0] if args else None
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            s = str(s)  # Lua would coerce a number to its string form
        if not isinstance(s, (bytes, str)):
            raise LuaApiError(f"json.decode: argument #1 must be a string, got {lua_type(s)}")
        return to_lua(env, decode_py(s))

    tbl = env.rt.table()
    tbl[b"encode"] = env.wrap(py_encode)
    tbl[b"decode"] = env.wrap(py_decode)
    env.g[b"json"] = tbl

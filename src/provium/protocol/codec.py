"""Dataclass <-> msgpack-ready values, driven by type hints.

Written by hand (rather than with a serialisation library) because the wire
shape is fixed by the reference: maps keyed by field name, tagged unions with
a few irregular shapes, and fields omitted when empty.  The agent must stay
stdlib + msgpack only, so a dependency here would land in every guest.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Union, get_args, get_origin

_HINTS: dict[type, dict[str, Any]] = {}


class WireError(ValueError):
    """A value on the wire does not have the shape its type requires."""


def omit_empty(default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING):
    """A field left off the wire when empty (and defaulted when absent)."""
    kw: dict[str, Any] = {"metadata": {"omit_empty": True}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def wire_name(name: str, **kw: Any):
    """A field whose wire key is not a valid Python name (e.g. `from`)."""
    return dataclasses.field(metadata={"wire": name}, **kw)


def hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls)
        _HINTS[cls] = h
    return h


def encode(value: Any) -> Any:
    custom = getattr(value, "__wire_encode__", None)
    if custom is not None:
        return custom()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("omit_empty") and (v is None or (hasattr(v, "__len__") and len(v) == 0)):
                continue
            out[f.metadata.get("wire", f.name)] = encode(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def decode(tp: Any, value: Any, where: str = "value") -> Any:
    optional, inner = _is_optional(tp)
    if optional:
        return None if value is None else decode(inner, value, where)
    tp = inner
    if tp is Any:
        return value
    if tp is type(None):  # OpResult<()>: the unit success value
        if value is not None:
            raise WireError(f"{where}: expected nil, got {type(value).__name__}")
        return None
    custom = getattr(tp, "__wire_decode__", None)
    if custom is not None:
        return custom(value, where)
    if dataclasses.is_dataclass(tp):
        # nil stands for "no arguments": a unit struct, or (spawn_worker) a struct
        # whose every field is optional and defaults to None.
        if value is None and all(f.default is None for f in dataclasses.fields(tp)):
            return tp()
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected a map for {tp.__name__}, got {type(value).__name__}")
        h = hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            key = f.metadata.get("wire", f.name)
            if key in value:
                kwargs[f.name] = decode(h[f.name], value[key], f"{where}.{key}")
            elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            elif _is_optional(h[f.name])[0]:
                kwargs[f.name] = None
            else:
                raise WireError(f"{where}: missing field `{key}` of {tp.__name__}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(m.value for m in tp)
            raise WireError(f"{where}: {value!r} is not one of {valid}") from None
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise WireError(f"{where}: expected an array, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected a map, got {type(value).__name__}")
        kt, vt = get_args(tp)
        return {decode(kt, k, where): decode(vt, v, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise WireError(f"{where}: expected a boolean, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(f"{where}: expected an integer, got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WireError(f"{where}: expected a number, got {type(value).__name__}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise WireError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    if tp is bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise WireError(f"{where}: expected bytes, got {type(value).__name__}")
        return bytes(value)
    raise WireError(f"{where}: no wire decoder for {tp!r}")

"""Dataclass <-> msgpack-ready values, driven by type hints.

Written by hand (rather than with a serialisation library) because the wire
shape is fixed by the reference: maps keyed by field name, tagged unions with
a few irregular shapes, and fields omitted when empty.  The agent must stay
stdlib + msgpack only, so a dependency here would land in every guest.

Every type gets its encoder or decoder built once, on first use, and cached:
a request then costs a few dictionary lookups per field instead of walking
its type hints again.  `typing` is not imported here (it is a noticeable part
of the agent's start inside a slow guest); its forms (`Any`, `Optional`,
`Union`, `List`) are still understood when the caller's module uses them.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types

from ..errors import ProtocolError


class _AnyType:
    """Stands for `typing.Any` (value taken as it is) where typing is not imported."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _AnyType()

_HINTS: dict = {}
_ENCODERS: dict = {}
_DECODERS: dict = {}
_MISSING = object()
_NoneType = type(None)


class WireError(ProtocolError, ValueError):
    """A value on the wire does not have the shape its type requires."""


def omit_empty(default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    """A field left off the wire when empty (and defaulted when absent)."""
    kw: dict = {"metadata": {"omit_empty": True}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def wire_name(name: str, **kw):
    """A field whose wire key is not a valid Python name (e.g. `from`)."""
    return dataclasses.field(metadata={"wire": name}, **kw)


def hints(cls: type) -> dict:
    """The resolved type of each dataclass field of cls (like typing.get_type_hints)."""
    h = _HINTS.get(cls)
    if h is None:
        h = {}
        for f in dataclasses.fields(cls):
            h[f.name] = _resolve(cls, f.name, f.type)
        _HINTS[cls] = h
    return h


def _resolve(cls: type, name: str, tp):
    if not isinstance(tp, str):
        return tp
    # A string annotation (`from __future__ import annotations`) is evaluated
    # where it was written: the module of the class that declared the field,
    # module names first, then the class's own, as typing.get_type_hints does.
    for base in cls.__mro__:
        if name in base.__dict__.get("__annotations__", {}):
            module = sys.modules.get(base.__module__)
            return eval(tp, dict(vars(base)), getattr(module, "__dict__", {}))  # noqa: S307
    return eval(tp, {}, {})  # noqa: S307


# ---- encoding -------------------------------------------------------------------------


def encode(value):
    enc = _ENCODERS.get(type(value), _MISSING)
    if enc is _MISSING:
        enc = _ENCODERS[type(value)] = _encoder_for(type(value))
    return value if enc is None else enc(value)


def _encoder_for(cls: type):
    """None when values of cls go on the wire as they are."""
    if getattr(cls, "__wire_encode__", None) is not None:
        return _custom_encode
    if dataclasses.is_dataclass(cls):
        return _dataclass_encoder(cls)
    if issubclass(cls, enum.Enum):
        return _enum_encode
    if issubclass(cls, (list, tuple)):
        return _list_encode
    if issubclass(cls, dict):
        return _dict_encode
    if issubclass(cls, (bytearray, memoryview)):
        return bytes
    return None


def _custom_encode(v):
    return v.__wire_encode__()


def _enum_encode(v):
    return v.value


def _list_encode(v):
    return [encode(x) for x in v]


def _dict_encode(v):
    return {k: encode(x) for k, x in v.items()}


def _dataclass_encoder(cls: type):
    plan = [(f.name, f.metadata.get("wire", f.name), bool(f.metadata.get("omit_empty")))
            for f in dataclasses.fields(cls)]
    encoders = _ENCODERS

    def enc(v):
        out = {}
        for name, key, omit in plan:
            x = getattr(v, name)
            if omit and (x is None or (hasattr(x, "__len__") and len(x) == 0)):
                continue
            e = encoders.get(type(x), _MISSING)
            out[key] = x if e is None else encode(x)
        return out

    return enc


# ---- decoding -------------------------------------------------------------------------


def decode(tp, value, where: str = "value"):
    return _decoder(tp)(value, where)


def _decoder(tp):
    try:
        dec = _DECODERS.get(tp)
    except TypeError:  # an unhashable annotation: build it every time
        return _build(tp)
    if dec is None:
        dec = _DECODERS[tp] = _build(tp)
    return dec


def _typing_attr(name: str):
    typing = sys.modules.get("typing")  # only loaded if somebody's annotations use it
    return getattr(typing, name, _MISSING) if typing is not None else _MISSING


def _origin_args(tp) -> tuple:
    if isinstance(tp, types.UnionType):
        return types.UnionType, tp.__args__
    origin = getattr(tp, "__origin__", None)
    if origin is None:
        return None, ()
    if origin is _typing_attr("Union"):
        origin = types.UnionType
    return origin, getattr(tp, "__args__", ())


def _is_optional(tp) -> tuple:
    origin, args = _origin_args(tp)
    if origin is types.UnionType:
        rest = [a for a in args if a is not _NoneType]
        if len(rest) == 1 and len(args) == 2:
            return True, rest[0]
    return False, tp


def _build(tp):
    optional, inner = _is_optional(tp)
    if optional:
        return _optional_decoder(_decoder(inner))
    tp = inner
    if tp is ANY or tp is _typing_attr("Any"):
        return _any_decode
    if tp is _NoneType:  # OpResult<()>: the unit success value
        return _nil_decode
    custom = getattr(tp, "__wire_decode__", None)
    if custom is not None:
        return custom
    if dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    origin, args = _origin_args(tp)
    if origin is list:
        (item,) = args
        return _list_decoder(item)
    if origin is dict:
        kt, vt = args
        return _dict_decoder(kt, vt)
    simple = _SIMPLE.get(tp) if isinstance(tp, type) else None
    if simple is not None:
        return simple

    def unknown(value, where):
        raise WireError(f"{where}: no wire decoder for {tp!r}")

    return unknown


def _optional_decoder(inner):
    def dec(value, where):
        return None if value is None else inner(value, where)

    return dec


def _any_decode(value, where):
    return value


def _nil_decode(value, where):
    if value is not None:
        raise WireError(f"{where}: expected nil, got {type(value).__name__}")
    return None


def _dataclass_decoder(tp: type):
    # The field plan is made on first use, not here: a type may refer to
    # itself, or to a class defined further down its module.
    plan: list = []
    ready = []
    unit = []

    def make() -> None:
        h = hints(tp)
        for f in dataclasses.fields(tp):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            plan.append((f.name, f.metadata.get("wire", f.name), _decoder(h[f.name]), has_default,
                         _is_optional(h[f.name])[0]))
        # nil stands for "no arguments": a unit struct, or (spawn_worker) a struct
        # whose every field is optional and defaults to None.
        unit.append(all(f.default is None for f in dataclasses.fields(tp)))
        ready.append(True)

    name = tp.__name__

    def dec(value, where):
        if not ready:
            make()
        if value is None and unit[0]:
            return tp()
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected a map for {name}, got {type(value).__name__}")
        kwargs = {}
        for fname, key, fdec, has_default, optional in plan:
            if key in value:
                kwargs[fname] = fdec(value[key], f"{where}.{key}")
            elif has_default:
                continue
            elif optional:
                kwargs[fname] = None
            else:
                raise WireError(f"{where}: missing field `{key}` of {name}")
        return tp(**kwargs)

    return dec


def _enum_decoder(tp: type):
    def dec(value, where):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(m.value for m in tp)
            raise WireError(f"{where}: {value!r} is not one of {valid}") from None

    return dec


def _list_decoder(item):
    item_dec = _decoder(item)

    def dec(value, where):
        if not isinstance(value, (list, tuple)):
            raise WireError(f"{where}: expected an array, got {type(value).__name__}")
        return [item_dec(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return dec


def _dict_decoder(kt, vt):
    kdec = _decoder(kt)
    vdec = _decoder(vt)

    def dec(value, where):
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected a map, got {type(value).__name__}")
        return {kdec(k, where): vdec(v, f"{where}[{k!r}]") for k, v in value.items()}

    return dec


def _bool_decode(value, where):
    if not isinstance(value, bool):
        raise WireError(f"{where}: expected a boolean, got {type(value).__name__}")
    return value


def _int_decode(value, where):
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{where}: expected an integer, got {type(value).__name__}")
    return value


def _float_decode(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(f"{where}: expected a number, got {type(value).__name__}")
    return float(value)


def _str_decode(value, where):
    if not isinstance(value, str):
        raise WireError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _bytes_decode(value, where):
    if isinstance(value, memoryview):
        # A large bin the agent's reader left in its frame (views.unpack_views):
        # kept as it is, so the bytes are not copied once more.
        return value
    if not isinstance(value, (bytes, bytearray)):
        raise WireError(f"{where}: expected bytes, got {type(value).__name__}")
    return bytes(value)


_SIMPLE = {bool: _bool_decode, int: _int_decode, float: _float_decode, str: _str_decode,
           bytes: _bytes_decode}

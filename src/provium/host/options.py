"""Checks of the arguments and option tables the host model's methods take.

One place for the shapes every method shares (a guest path, an option table
merged with keyword arguments, a permission mask), so each method only lists
its own keys and the messages read the same everywhere:
``vm:write_file: unknown option `x` (valid: mode, perm)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ArgumentError
from .values import type_name


def merge_kw(opts: Mapping | None, kw: dict, method: str) -> dict | None:
    """An options table (Lua's `{...}` or a Python mapping) with keyword arguments on top."""
    if opts is not None and not isinstance(opts, Mapping):
        raise ArgumentError(f"{method}: options must be a table/dict, got {type_name(opts)}")
    if not kw:
        return None if opts is None else dict(opts)
    out = dict(opts or {})
    out.update(kw)
    return out


def check_keys(opts: Mapping, valid: Iterable[str], method: str) -> None:
    """Refuse a key that is not in `valid`, listing the valid ones."""
    names = tuple(valid)
    for k in opts:
        if k not in names:
            raise ArgumentError(f"{method}: unknown option `{k}` (valid: {', '.join(names)})")


def path_arg(path: Any, method: str, what: str = "path") -> str:
    """A non-empty path string without NUL bytes (a `Path` is accepted too)."""
    if isinstance(path, Path):
        path = str(path)
    if not isinstance(path, str):
        raise ArgumentError(f"{method}: `{what}` must be a path string, got {type_name(path)}")
    if not path:
        raise ArgumentError(f"{method}: `{what}` must not be empty")
    if "\0" in path:
        raise ArgumentError(f"{method}: `{what}` contains a NUL byte")
    return path


def perm_arg(v: Any, method: str) -> int | None:
    """A permission mask 0..0o7777, or None for the default."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o7777:
        raise ArgumentError(f"{method}: `perm` must be an integer permission mask 0..0o7777, got {v!r}")
    return v

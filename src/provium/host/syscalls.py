"""Raw syscall arguments (integer and table forms) and the async pending handle."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from ..protocol.messages import SyscallArgs, SyscallResult
from ..protocol.types import NestedPtr
from .pynames import python_names
from .errors import ArgumentError, HandleError
from .results import SyscallOutcome
from .values import type_name

MAX_ARGS = 6
TABLE_KEYS = ("args", "bufs", "ptrs", "nested")


def to_i64(value: Any, what: str) -> int:
    """An integer register value; floats truncate, u64 values wrap to i64."""
    if isinstance(value, bool):
        raise ArgumentError(f"{what} must be an integer, got boolean")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ArgumentError(f"{what} must be a finite number, got {value}")
        value = int(value)
    if not isinstance(value, int):
        raise ArgumentError(f"{what} must be an integer, got {type_name(value)}")
    if 2**63 <= value < 2**64:
        value -= 2**64
    if not -(2**63) <= value < 2**63:
        raise ArgumentError(f"{what}: {value} does not fit in 64 bits")
    return value


def _nr(nr: Any, method: str) -> int:
    if nr is None:
        raise ArgumentError(f"{method}(nr, ...): missing nr")
    if isinstance(nr, bool) or not isinstance(nr, (int, float)) or (isinstance(nr, float) and not nr.is_integer()):
        raise ArgumentError(f"{method}: nr must be integer, got {type_name(nr) if not isinstance(nr, float) else nr}")
    return int(nr)


def _int_list(values: Any, method: str, what: str) -> list[int]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise ArgumentError(f"{method}: `{what}` must be an array of integers, got {type_name(values)}")
    return [to_i64(v, f"{method}: {what}[{i + 1}]") for i, v in enumerate(values)]


def build_syscall(method: str, nr: Any, args: tuple, *, table_ok: bool = True) -> SyscallArgs:
    """`(nr, a1, ..., a6)`, `(nr, [a1, ...])` or `(nr, {args=, bufs=, ptrs=, nested=})`.

    Integer args beyond six are ignored (as the reference does).  In the table
    form `ptrs[i]` is the 0-based argument slot that receives the address of
    `bufs[i]`, and each `nested` entry `{parent=, child=, offset=}` (1-based
    buffer indices, like Lua arrays) writes the address of buffer `child` into
    buffer `parent` at byte `offset`.
    """
    n = _nr(nr, method)
    if len(args) == 1 and isinstance(args[0], Mapping):
        if not table_ok:
            raise ArgumentError("batch:syscall does not support the {args=, bufs=, ptrs=} table form; use "
                                "vm:syscall outside the batch, or pass bare integer args here")
        return _table(method, n, args[0])
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    ints = [to_i64(a, f"{method}: arg {i + 1}") for i, a in enumerate(args[:MAX_ARGS])]
    return SyscallArgs(nr=n, args=ints + [0] * (MAX_ARGS - len(ints)))


def _table(method: str, nr: int, t: Mapping) -> SyscallArgs:
    extra = [k for k in t if k not in TABLE_KEYS]
    if extra:
        raise ArgumentError(f"{method}: unknown key `{extra[0]}` in the table form (valid: {', '.join(TABLE_KEYS)})")
    ints = _int_list(t.get("args") or [], method, "args")
    if len(ints) > MAX_ARGS:
        raise ArgumentError(f"{method}: at most {MAX_ARGS} args, got {len(ints)}")
    bufs_in = t.get("bufs") or []
    if isinstance(bufs_in, (str, bytes, Mapping)) or not isinstance(bufs_in, Sequence):
        raise ArgumentError(f"{method}: `bufs` must be an array of byte strings, got {type_name(bufs_in)}")
    bufs = []
    for i, b in enumerate(bufs_in):
        if isinstance(b, str):
            b = b.encode("utf-8")
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"{method}: bufs[{i + 1}] must be a byte string, got {type_name(b)}")
        bufs.append(bytes(b))
    ptrs = _int_list(t.get("ptrs") or [], method, "ptrs")
    if len(ptrs) > len(bufs):
        raise ArgumentError(f"{method}: {len(ptrs)} ptrs but only {len(bufs)} bufs (ptrs[i] places bufs[i])")
    for i, p in enumerate(ptrs):
        if not 0 <= p < MAX_ARGS:
            raise ArgumentError(f"{method}: ptrs[{i + 1}] = {p} is not an argument slot (0..5)")
    nested = []
    for i, e in enumerate(t.get("nested") or []):
        if not isinstance(e, Mapping) or not all(k in e for k in ("parent", "child", "offset")):
            raise ArgumentError(f"{method}: nested[{i + 1}] must be a {{parent=, child=, offset=}} table")
        parent, child, offset = (to_i64(e[k], f"{method}: nested[{i + 1}].{k}") for k in ("parent", "child", "offset"))
        for k, v in (("parent", parent), ("child", child)):
            if not 1 <= v <= len(bufs):
                raise ArgumentError(f"{method}: nested[{i + 1}].{k} = {v} is not a buffer index (1..{len(bufs)})")
        if offset < 0 or offset + 8 > len(bufs[parent - 1]):
            raise ArgumentError(f"{method}: nested[{i + 1}].offset = {offset} does not leave 8 bytes "
                                f"in buffer {parent} ({len(bufs[parent - 1])} bytes)")
        nested.append(NestedPtr(parent=parent - 1, child=child - 1, offset=offset))
    return SyscallArgs(nr=nr, args=ints + [0] * (MAX_ARGS - len(ints)), bufs=bufs, ptrs=ptrs, nested=nested)


def outcome(res: SyscallResult) -> SyscallOutcome:
    return SyscallOutcome(ret=res.ret, errno=res.errno, out_bufs=list(res.out_bufs))


@python_names
class PendingSyscall:
    """A syscall in flight; `await_()` blocks for its outcome (once)."""

    def __init__(self, method: str, collect: Callable[[], SyscallOutcome]) -> None:
        self._method = method
        self._collect = collect
        self._done = False

    def await_(self) -> SyscallOutcome:
        if self._done:
            raise HandleError(f"{self._method}: handle already awaited")
        self._done = True
        return self._collect()

    # `await` is a Python keyword; this spelling lets `getattr(p, "await")` work too.
    locals()["await"] = await_

    @property
    def awaited(self) -> bool:
        return self._done


def future_collector(vm, fut: concurrent.futures.Future) -> Callable[[], SyscallOutcome]:
    def collect() -> SyscallOutcome:
        return vm._wait_future(fut)

    return collect

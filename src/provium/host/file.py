"""An open guest file: a handle in the agent's file table plus a cursor cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.messages import CloseArgs, ReadArgs, SeekArgs, WriteArgs
from ..protocol.types import OpenMode, SeekWhence
from .pynames import python_names
from .errors import ArgumentError, HandleError
from .execargs import to_bytes
from .values import type_name

if TYPE_CHECKING:
    from .streams import Tail
    from .vm import VM

MODE_KEYS = ("read", "write", "create", "truncate", "append", "exclusive", "perm")
READ_ALL_CHUNK = 64 * 1024

# Python-style mode strings, for Python callers: "r", "w", "a", "x", with "+" and "b".
_STRING_MODES = {
    "r": dict(read=True),
    "w": dict(write=True, create=True, truncate=True),
    "a": dict(append=True, create=True),
    "x": dict(write=True, create=True, exclusive=True),
}


def parse_open_mode(mode: Any, method: str = "vm:open_file") -> tuple[OpenMode, int | None]:
    """A mode table (`{read=true, write=true, create=true, perm=0o600}`) or a
    Python mode string (`"r"`, `"w"`, `"a+"`, `"x"`), as (OpenMode, create_perm)."""
    perm = None
    if isinstance(mode, str):
        letters = mode.replace("b", "")
        plus = letters.endswith("+")
        base = letters[:-1] if plus else letters
        if base not in _STRING_MODES:
            raise ArgumentError(f"{method}: mode string `{mode}` is not valid "
                                "(expected r, w, a or x, optionally with + ; or a mode table)")
        flags = dict(_STRING_MODES[base])
        if plus:
            flags["read"] = True
            if base != "a":
                flags["write"] = True
        return OpenMode(**flags), None
    if not isinstance(mode, Mapping):
        raise ArgumentError(f"{method}: second argument must be a mode table "
                            f"like {{read=true}}, got {type_name(mode)}")
    flags = {}
    for k, v in mode.items():
        if k not in MODE_KEYS:
            raise ArgumentError(f"{method}: unknown mode key `{k}` (valid: {', '.join(MODE_KEYS)})")
        if k == "perm":
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o7777:
                raise ArgumentError(f"{method}: `perm` must be an integer permission mask 0..0o7777 "
                                    f"(e.g. 0x1a4 for 0644), got {v!r}")
            perm = v
        else:
            if v is None:
                continue
            if not isinstance(v, bool):
                raise ArgumentError(f"{method}: mode key `{k}` must be a boolean, got {type_name(v)}")
            flags[k] = v
    if not (flags.get("read") or flags.get("write") or flags.get("append")):
        got = "{" + ", ".join(f"{k}={'true' if v else 'false'}" for k, v in flags.items()) + "}"
        raise ArgumentError(f"{method}: must specify at least one of `read`, `write`, `append` "
                            f"(got `{got}` — a no-mode open would defer errors to the first I/O).")
    return OpenMode(**flags), perm


@python_names
class File:
    """Returned by `vm.open_file`.  All I/O goes through the agent; `close()` is
    idempotent and always deregisters the handle from the VM."""

    def __init__(self, vm: "VM", handle: int, path: str) -> None:
        self._vm = vm
        self._handle: int | None = handle
        self.path = path
        self._cursor = 0
        self._generation = vm.generation
        self._why_closed = ""

    def _live(self, op: str) -> int:
        if self._handle is None:
            raise HandleError("file is closed" + self._why_closed)
        self._vm._check_generation(self._generation, f"file `{self.path}`")
        return self._handle

    def read(self, n: int) -> bytes:
        """Up to n bytes from the cursor; b"" at end of file."""
        h = self._live("read")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArgumentError(f"file:read: n must be a non-negative integer, got {n!r}")
        data = self._vm._file_op("read", ReadArgs(h, n), self.path).data
        self._cursor += len(data)
        return data

    def read_all(self) -> bytes:
        """From the cursor to end of file, in 64 KiB reads."""
        parts: list[bytes] = []
        while True:
            chunk = self.read(READ_ALL_CHUNK)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def write(self, data: Any) -> int:
        """Returns the number of bytes the guest wrote (may be short, as with write(2))."""
        h = self._live("write")
        buf = to_bytes(data, "file:write", "data")
        n = self._vm._file_op("write", WriteArgs(h, buf), self.path).written
        self._cursor += n
        return n

    def seek(self, offset: int, whence: str | None = "set") -> int:
        """`whence` is "set" (default), "cur" or "end"; returns the new offset."""
        h = self._live("seek")
        if whence is None:
            whence = "set"
        if whence not in ("set", "cur", "end"):
            raise ArgumentError(f"seek: whence must be set/cur/end, got `{whence}`")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ArgumentError(f"seek: offset must be an integer, got {type_name(offset)}")
        pos = self._vm._file_op("seek", SeekArgs(h, offset, SeekWhence(whence)), self.path)
        self._cursor = pos
        return pos

    def tell(self) -> int:
        """The agent's idea of the position (one round trip; authoritative)."""
        return self.seek(0, "cur")

    def close(self) -> None:
        if self._handle is None:
            return
        h, self._handle = self._handle, None
        try:
            if self._vm.state == "booted" and self._generation == self._vm.generation:
                self._vm._file_op("close", CloseArgs(h), self.path)
        finally:
            self._vm._registry.remove_file(h)

    def _forget(self) -> None:
        """The agent closed this file itself (its worker was joined)."""
        h, self._handle = self._handle, None
        if h is not None:
            self._why_closed = " (the worker that opened it was joined, which closes its files)"
            self._vm._registry.remove_file(h)

    def fd(self) -> int:
        """The agent handle id (for ioctl/fd_stream); 0 once closed."""
        return self._handle or 0

    @property
    def closed(self) -> bool:
        return self._handle is None

    def tail_stream(self) -> "Tail":
        """A Tail of this file's path starting at the cached cursor."""
        return self._vm._tail(self.path, self._cursor, kind="file_tail_stream")

    def __enter__(self) -> "File":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"file(file#{self._handle})" if self._handle is not None else "file(closed)"

"""`vm.batch(fn)`: ops queued by `fn(b)` and sent as one `batch_op` round trip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from ..protocol.messages import (
    AgentMessage,
    ListdirArgs,
    MkdirArgs,
    ReadFileArgs,
    RenameArgs,
    StatArgs,
    UnlinkArgs,
    WriteFileArgs,
)
from ..protocol.types import OpResult, WriteFileMode
from .pynames import python_names
from .agent_errors import os_error_text
from .errors import ArgumentError, HandleError
from .execargs import build_command, to_bytes
from .options import merge_kw
from .results import DirEntry, RunResult, Stat, entry_name
from .syscalls import build_syscall, outcome
from .values import type_name


@dataclass
class Item:
    op: Any
    ok: Callable[[Any], Any]
    what: str

    def convert(self, msg: AgentMessage) -> dict:
        if msg.kind == "agent_error":
            return {"err": f"agent error ({msg.data.kind.value}): {msg.data.message}"}
        if msg.kind != self.op.REPLY[0]:
            return {"err": f"agent: expected `{self.op.REPLY[0]}` but the agent sent `{msg.kind}`"}
        payload = msg.data
        if isinstance(payload, OpResult):
            if not payload.ok:

                return {"err": os_error_text(self.what, payload.value)}
            payload = payload.value
        return {"ok": self.ok(payload)}


def _path(p: Any, method: str) -> str:
    if not isinstance(p, str) or not p:
        raise ArgumentError(f"{method}: path must be a non-empty string, got {type_name(p)}")
    return p


@python_names
class Batch:
    """The builder handed to `vm.batch`'s function.  Each method queues one op."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.sent = False

    def _queue(self, method: str) -> None:
        # A `b` kept after vm:batch returned would queue into a batch nobody sends.
        if self.sent:
            raise HandleError(f"{method}: this batch was already sent (vm:batch has returned); "
                              "queue ops inside the function given to vm:batch")

    def run(self, cmd: Any, opts: Mapping | None = None, **kw: Any) -> None:
        self._queue("batch:run")

        c = build_command("batch:run", cmd, merge_kw(opts, kw, "batch:run"))
        self.items.append(Item(c.exec_args(), RunResult.from_exec, f"run `{c.cmd}`"))

    def read_file(self, path: Any) -> None:
        self._queue("batch:read_file")
        p = _path(path, "batch:read_file")
        self.items.append(Item(ReadFileArgs(p), lambda v: v.data, f"read_file `{p}`"))

    def write_file(self, path: Any, data: Any) -> None:
        self._queue("batch:write_file")
        p = _path(path, "batch:write_file")
        op = WriteFileArgs(p, to_bytes(data, "batch:write_file", "data"), WriteFileMode.REPLACE)
        self.items.append(Item(op, lambda v: None, f"write_file `{p}`"))

    def stat(self, path: Any) -> None:
        self._queue("batch:stat")
        p = _path(path, "batch:stat")
        self.items.append(Item(StatArgs(p, True), lambda md: Stat(md.size, md.mtime_ns, md.perm & 0o7777,
                                                                  entry_name(md.entry_type)), f"stat `{p}`"))

    def listdir(self, path: Any) -> None:
        self._queue("batch:listdir")
        p = _path(path, "batch:listdir")
        self.items.append(Item(ListdirArgs(p), lambda es: [DirEntry(e.name, entry_name(e.entry_type)) for e in es],
                               f"listdir `{p}`"))

    def mkdir(self, path: Any, opts: Mapping | bool | None = None) -> None:
        self._queue("batch:mkdir")
        p = _path(path, "batch:mkdir")
        parents = False
        if isinstance(opts, bool):
            parents = opts
        elif isinstance(opts, Mapping):
            for k in opts:
                if k not in ("parents",):
                    raise ArgumentError(f"batch:mkdir: unknown option `{k}` (valid: parents)")
            parents = bool(opts.get("parents", False))
        elif opts is not None:
            raise ArgumentError(f"batch:mkdir: options must be a table or a boolean, got {type_name(opts)}")
        self.items.append(Item(MkdirArgs(p, parents), lambda v: None, f"mkdir `{p}`"))

    def unlink(self, path: Any) -> None:
        self._queue("batch:unlink")
        p = _path(path, "batch:unlink")
        self.items.append(Item(UnlinkArgs(p), lambda v: None, f"unlink `{p}`"))

    def rename(self, src: Any, dst: Any) -> None:
        self._queue("batch:rename")
        a, b = _path(src, "batch:rename"), _path(dst, "batch:rename")
        self.items.append(Item(RenameArgs(a, b), lambda v: None, f"rename `{a}`"))

    def syscall(self, nr: Any, *args: Any) -> None:
        self._queue("batch:syscall")
        op = build_syscall("batch:syscall", nr, args, table_ok=False)
        self.items.append(Item(op, lambda r: outcome(r), f"syscall {op.nr}"))

    def __len__(self) -> int:
        return len(self.items)

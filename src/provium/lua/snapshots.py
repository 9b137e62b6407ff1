"""Lua bindings of Snapshot and LabSnapshot (thin handles over a path)."""

from __future__ import annotations

from typing import Any

from ..host.labsnap import LabSnapshot
from ..host.snapshot import Snapshot
from .args import Args
from .binding import Binding, method
from .convert import lua_type
from .errors import LuaApiError


class SnapshotBinding(Binding):
    KIND = "snapshot"

    def __init__(self, state: Any, snap: Any) -> None:  # a Snapshot or a LabSnapshot
        super().__init__(state)
        self.host = snap

    def __str__(self) -> str:
        return str(self.host)

    @method()
    def path(self, *a: Any) -> str:
        Args("snap:path", a, max_args=0)
        return self.host.path

    @method()
    def size(self, *a: Any) -> int:
        Args("snap:size", a, max_args=0)
        return self.host.size()

    @method()
    def delete(self, *a: Any) -> None:
        Args("snap:delete", a, max_args=0)
        self.host.delete()


class LabSnapshotBinding(SnapshotBinding):
    KIND = "lab_snapshot"


def vm_restore_source(v: Any) -> Any:
    """What `vm:restore(x)` accepts: a Snapshot userdata or a path string."""
    if isinstance(v, SnapshotBinding) and isinstance(v.host, Snapshot):
        return v.host
    if isinstance(v, Binding):
        raise LuaApiError("vm:restore: expected snapshot userdata or path string")
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, str):
        return v
    raise LuaApiError(f"vm:restore: expected snapshot|string, got {lua_type(v)}")


def lab_restore_source(v: Any) -> Any:
    if isinstance(v, SnapshotBinding) and isinstance(v.host, LabSnapshot):
        return v.host
    if isinstance(v, Binding):
        raise LuaApiError("lab:restore: expected lab snapshot userdata or directory string")
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, str):
        return v
    raise LuaApiError(f"lab:restore: expected snapshot|string, got {lua_type(v)}")

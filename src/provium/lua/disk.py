"""The Lua binding of a Disk (`vm:disk(id)`, `vm:attach_disk{...}`): translation only.

Sectors are 512 bytes; the host object (`host/disk.py`) checks values and owns
every behaviour.  Every handle to one disk is the same host object, so faults and
the detached flag are shared between handles.
"""

from __future__ import annotations

from typing import Any

from .args import Args
from .binding import Binding, method
from .convert import is_table, lua_type, to_py
from .errors import LuaApiError


class DiskBinding(Binding):
    KIND = "disk"

    def __init__(self, state: Any, disk: Any) -> None:
        super().__init__(state)
        self.host = disk

    def __str__(self) -> str:
        return str(self.host)

    @method()
    def id(self, *a: Any) -> str:
        return self.host.id

    @method()
    def size(self, *a: Any) -> int:
        return self.host.size()

    @method()
    def read_sectors(self, *a: Any) -> bytes:
        args = Args("disk:read_sectors", a, max_args=2)
        return self.host.read_sectors(to_py(args.get(1)), to_py(args.get(2)))

    @method()
    def write_sectors(self, *a: Any) -> None:
        args = Args("disk:write_sectors", a, max_args=2)
        self.host.write_sectors(to_py(args.get(1)), args.data(2, "data"))

    @method()
    def fault_inject(self, *a: Any) -> None:
        args = Args("disk:fault_inject", a, max_args=2)
        opts = args.get(2)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"disk:fault_inject: argument #2 (opts) must be a table, got {lua_type(opts)}")
        self.host.fault_inject(to_py(args.get(1)), None if opts is None else to_py(opts, empty="dict"))

    @method()
    def clear_faults(self, *a: Any) -> None:
        self.host.clear_faults()

    @method()
    def active_faults(self, *a: Any) -> list:
        return self.host.active_faults()

    @method()
    def fail_reads(self, *a: Any) -> None:
        self.host.fail_reads()

    @method()
    def fail_after(self, *a: Any) -> None:
        args = Args("disk:fail_after", a, max_args=1)
        self.host.fail_after(to_py(args.get(1)))

    @method()
    def fail_range(self, *a: Any) -> None:
        args = Args("disk:fail_range", a, max_args=2)
        self.host.fail_range(to_py(args.get(1)), to_py(args.get(2)))

    @method()
    def power_cut(self, *a: Any) -> int:
        return self.host.power_cut()

    @method()
    def detach(self, *a: Any) -> None:
        self.host.detach()

    @method()
    def is_detached(self, *a: Any) -> bool:
        return self.host.is_detached()

"""The Lua binding of a Lab: the `provium` global, sub-labs and test scopes.

Besides its methods a lab answers `lab.<name>` (dot sugar): the reserved
helpers `pack`/`unpack`/`vm_fixture`/`lab_fixture` first, then the file-scope
settings `timeout`/`reset_between_tests`, then a VM, a bridge or a sub-lab of
that name (walking up to the file's root lab from a test scope), else nil.
Assigning `provium.<key> = value` sets a file-scope setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..host.lab import Lab, kind_of
from ..host.values import parse_duration
from .args import Args, opts_dict
from .binding import Binding, Multi, method
from .convert import is_table, lua_type, to_py
from .errors import LuaApiError

if TYPE_CHECKING:
    from .state import FileState

CONFIG_KEYS = ("reset_between_tests", "timeout")


class LabBinding(Binding):
    KIND = "lab"

    def __init__(self, state: "FileState", lab: Lab) -> None:
        super().__init__(state)
        self.host = lab

    def __str__(self) -> str:
        return str(self.host)

    # ---- dot sugar and settings -------------------------------------------------------

    def lua_index(self, key: str) -> Any:
        st = self._state
        if key == "pack":
            return st.env.H.pack
        if key == "unpack":
            return st.env.H.unpack
        if key in ("vm_fixture", "lab_fixture"):
            return st.fixture_function(key)
        if key in CONFIG_KEYS:
            return st.file_config.get(key)
        member = self.host.find_any(key)  # a VM, bridge, disk or sub-lab, walking up to the file root
        return None if member is None else st.bind(member)

    def lua_newindex(self, key: str, value: Any) -> None:
        st = self._state
        if key not in CONFIG_KEYS:
            raise LuaApiError(f"cannot set `provium.{key}`: not a recognised file-scope config key. "
                              f"Known keys: {', '.join(CONFIG_KEYS)}")
        if st.current_test is not None:
            raise LuaApiError(f"cannot set `provium.{key}` inside a test body: it is a file-scope setting, "
                              "read once before the first test; set it at the top of the file")
        if key == "reset_between_tests":
            if value is not None and not isinstance(value, bool):
                raise LuaApiError(f"provium.reset_between_tests must be a boolean, got {lua_type(value)}")
        else:
            secs = parse_duration(to_py(value), "provium.timeout", allow_none=True)
            if secs is not None and secs <= 0:
                raise LuaApiError(f"provium.timeout must be a positive duration, got {to_py(value)!r}")
        st.file_config[key] = value

    # ---- membership -------------------------------------------------------------------

    @method()
    def name(self, *a: Any) -> str:
        return self.host.name

    @method()
    def vm(self, *a: Any) -> Any:
        n = len(a)
        while n and a[n - 1] is None:
            n -= 1
        if n > 3:
            raise LuaApiError(f"lab:vm: expected 1, 2, or 3 args, got {n}")
        args = Args("lab:vm", a)
        name = args.string(1, "name")
        if n <= 1:
            return self._state.bind(self.host.vm(name))
        profile = args.string(2, "profile")
        opts = args.get(3)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"lab:vm: opts must be a table, got {lua_type(opts)}")
        vm = self.host.create_vm(name, profile, to_py(opts, empty="dict"))
        return self._state.register_vm(vm, self.host)

    @method()
    def lab(self, *a: Any) -> Any:
        args = Args("lab:lab", a, max_args=1)
        return self._state.bind(self.host.lab(args.string(1, "name", optional=True)))

    @method()
    def include(self, *a: Any) -> None:
        args = Args("lab:include", a, max_args=1)
        v = args.get(1)
        if isinstance(v, Binding):
            self._include_one(v)
        elif is_table(v):
            n = len(v)
            for i in range(1, n + 1):
                item = v[i]
                if not isinstance(item, Binding):
                    raise LuaApiError(f"lab:include: array entries must be userdata (vm, bridge or lab); "
                                      f"entry [{i}] is a {lua_type(item)}")
                self._include_one(item)
        else:
            raise LuaApiError(f"lab:include expected userdata or array, got {lua_type(v)}")

    def _include_one(self, b: Binding) -> None:
        if kind_of(getattr(b, "host", None)) is None:
            raise LuaApiError(f"lab:include: expected vm, bridge, or lab userdata, got a {b.KIND}")
        self.host.include(b.host)

    @method()
    def remove(self, *a: Any) -> None:
        args = Args("lab:remove", a, max_args=1)
        v = args.get(1)
        if isinstance(v, (bytes, str)):
            self.host.remove(args.string(1, "name"))
        elif isinstance(v, Binding) and kind_of(getattr(v, "host", None)) is not None:
            self.host.remove(v.host)
        elif isinstance(v, Binding):
            raise LuaApiError(f"lab:remove: userdata is not a vm, bridge, or lab (got a {v.KIND})")
        else:
            raise LuaApiError(f"lab:remove expected name|vm|bridge|lab, got {lua_type(v)}")

    @method()
    def members(self, *a: Any) -> list:
        return self.host.members()

    @method()
    def vm_names(self, *a: Any) -> list:
        return self.host.vm_names()

    @method()
    def bridge_names(self, *a: Any) -> list:
        return self.host.bridge_names()

    @method()
    def sub_lab_names(self, *a: Any) -> list:
        return self.host.sub_lab_names()

    @method()
    def depends_on_file(self, *a: Any) -> None:
        # Read by the fixture cache-key scanner from the source text; nothing to do at run time.
        Args("lab:depends_on_file", a, max_args=1).string(1, "host_path")

    # ---- batch lifecycle ------------------------------------------------------------------

    @method()
    def boot(self, *a: Any) -> Any:
        Args("lab:boot", a, max_args=0)
        held = self._state.deferred
        if held.holding:
            held.add(self._state.caller_where(), self.host.boot)  # see deferboot.py
        else:
            self.host.boot()
        return self

    @method()
    def shutdown(self, *a: Any) -> None:
        Args("lab:shutdown", a, max_args=0)
        self.host.shutdown()

    @method()
    def pause(self, *a: Any) -> None:
        Args("lab:pause", a, max_args=0)
        self.host.pause()

    @method()
    def resume(self, *a: Any) -> None:
        Args("lab:resume", a, max_args=0)
        self.host.resume()

    @method()
    def claim(self, *a: Any) -> None:
        args = Args("lab:claim", a, max_args=1)
        opts = opts_dict("lab:claim", args.table(1, "amount"), ("memory", "cpus"))
        mem, cpus = to_py(opts.get("memory")), opts.get("cpus")
        if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float, str))):
            raise LuaApiError(f"claim: memory expected string|int, got {lua_type(opts.get('memory'))}")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float))):
            raise LuaApiError(f"claim: cpus expected int, got {lua_type(cpus)}")
        if isinstance(mem, float):
            mem = int(mem) if mem >= 0 else mem
        self.host.claim(mem, cpus)

    # ---- later pieces -----------------------------------------------------------------------

    @method()
    def bridge(self, *a: Any) -> Any:
        n = len(a)
        while n and a[n - 1] is None:
            n -= 1
        if n > 3:
            raise LuaApiError(f"lab:bridge: expected 1, 2, or 3 args, got {n}")
        args = Args("lab:bridge", a)
        name = args.string(1, "name")
        opts = args.get(2)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"lab:bridge: opts must be a table, got {lua_type(opts)}")
        existed = self.host.find_bridge(name) is not None if name is not None else False
        br = self.host.bridge(name, to_py(opts, empty="dict") if opts is not None else None,
                              create_only=n >= 2)
        if existed:
            return self._state.bind(br)
        return self._state.register_bridge(br, self.host)

    @method()
    def barrier(self, *a: Any) -> Any:
        """true, or false and the reason (timed out, can never be met): so
        `assert(provium:barrier("up", 2))` fails with a clear message."""
        args = Args("lab:barrier", a, max_args=3)
        name, count, timeout = args.get(1), args.get(2), args.get(3)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if not isinstance(name, str):
            raise LuaApiError(f"barrier: name must be a string, got {lua_type(name)}")
        if isinstance(count, bool) or not isinstance(count, int):
            raise LuaApiError(f"barrier: count must be an integer, got {lua_type(count)}"
                              + (" (a float, even 2.0, is refused)" if isinstance(count, float) else ""))
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise LuaApiError(f"barrier: timeout must be a number of seconds, got {lua_type(timeout)}")
        met, why = self.host.barrier(name, count, timeout)
        return True if met else Multi((False, why))

    @method()
    def snapshot(self, *a: Any) -> Any:
        from ..host import labsnap
        from .snapshots import LabSnapshotBinding

        d = Args("lab:snapshot", a, max_args=1).string(1, "dir", optional=True)
        snap = labsnap.snapshot(self.host, d)
        # With a dir the reference returns the dir string (legacy shape), else a handle.
        return snap.path if d is not None else LabSnapshotBinding(self._state, snap)

    @method()
    def restore(self, *a: Any) -> None:
        from ..host import labsnap
        from .snapshots import lab_restore_source

        args = Args("lab:restore", a, max_args=1)
        vms = labsnap.restore(self.host, lab_restore_source(args.get(1)))
        for vm in vms.values():
            self._state.register_vm(vm, self.host)

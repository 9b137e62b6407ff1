"""`provium:vm_fixture(name)` / `provium:lab_fixture(name)` for Lua (translation only;
the work is in provium.fixtures)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .binding import Binding
from .convert import lua_type
from .errors import LuaApiError

if TYPE_CHECKING:
    from .state import FileState


def fixture_function(state: FileState, key: str) -> Any:
    def call(*args: Any) -> Any:
        # Colon form passes the lab first; the dot form does not.
        if args and isinstance(args[0], Binding):
            args = args[1:]
        name = args[0] if args else None
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if not isinstance(name, str):
            raise LuaApiError(f"provium:{key}(name): name must be a string, got {lua_type(name)}")
        fx = state.fixtures()
        if key == "vm_fixture":
            vm = fx.vm(name, state.root)
            return state.register_vm(vm, state.root)
        sub = fx.lab(name, state.root)
        for _, vm in sub.all_vms():
            state.file_scope.add("vm", vm)
        return state.bind(sub)

    return state.env.wrap(call)

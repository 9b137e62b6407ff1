"""How Python objects appear in Lua.

A `Binding` is a small Python object that stands for one host object (a VM, a
lab, a process...).  Lupa hands it to Lua as userdata.  Lua can reach only what
the binding declares:

* methods marked with `@method` — fetched by name, called with a colon
  (`vm:run(...)`); a dot call (`vm.run(...)`) is refused with a message, since
  it would silently shift every argument;
* whatever `lua_index(key)` returns for other keys (fields such as
  `result.exit_code`, the `provium.<name>` sugar); unknown keys raise a
  message listing the methods.

Nothing else of the Python object is reachable: the runtime's attribute
handlers refuse any other access (see `runtime.py`).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from .errors import LuaApiError


class Multi(tuple):
    """Return several values to Lua (`return a, b`)."""


def method(name: str | None = None) -> Callable:
    """Mark a Binding function as a Lua method (its Lua name defaults to the
    Python name without a trailing underscore)."""

    def deco(fn: Callable) -> Callable:
        fn._lua_name = name or fn.__name__.rstrip("_")  # type: ignore[attr-defined]
        return fn

    return deco


class Binding:
    KIND: ClassVar[str] = "object"  # how messages name the object: "vm", "lab", "proc"...
    host: Any  # the host object this binding stands for (set by each subclass)
    LUA_METHODS: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        methods: dict[str, Callable] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                lua_name = getattr(attr, "_lua_name", None)
                if lua_name:
                    methods[lua_name] = attr
        cls.LUA_METHODS = methods

    def __init__(self, state: Any) -> None:
        self._state = state

    # -- the Lua-visible surface beyond methods ------------------------------------------

    def lua_index(self, key: str) -> Any:
        raise self.unknown_key(key)

    def lua_newindex(self, key: str, value: Any) -> None:
        raise LuaApiError(f"{self.KIND}: cannot set field `{key}` (a {self.KIND} has no assignable fields)")

    def __call__(self, *args: Any) -> Any:
        raise LuaApiError(f"attempt to call a {self.KIND} value (use its methods, e.g. {self.KIND}:method(...))")

    def unknown_key(self, key: str) -> LuaApiError:
        names = ", ".join(sorted(self.LUA_METHODS))
        return LuaApiError(f"{self.KIND}: no method or field `{key}` (methods: {names})")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

"""A fresh, restricted Lua 5.4 state (lupa) with provium's prelude loaded.

Restrictions, and why:

* `register_eval=False, register_builtins=False` and the `python` global
  removed: Lua code cannot evaluate Python or reach its builtins.
* attribute handlers: indexing any Python object from Lua goes through
  `_getattr`/`_setattr`, which allow only what a `Binding` declares.  Host
  objects, Python functions and modules are opaque.
* `encoding=None`: Lua strings arrive as bytes, so binary data (NULs,
  non-UTF-8) survives; text arguments are decoded where they are used.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import lupa.lua54 as lupa_mod

from ..host.pynames import LUA_CALLER
from ..host.values import parse_duration
from . import failtext
from .binding import Binding, Multi
from .convert import key_text, lua_type, to_py
from .errors import LuaApiError, PositionedError, message_of
from .interrupt import Interrupter, parse_address

LuaError = lupa_mod.LuaError
PRELUDE_CHUNK = b"=provium-prelude"  # the prelude's source name; the timeout hook spares it


def _prelude_source() -> bytes:
    # Through this package's loader, as importlib.resources would (a zipped install
    # works too), without importing importlib.resources and its readers (zipfile):
    # a few milliseconds of every run's start.
    loader = __spec__.loader
    assert loader is not None and hasattr(loader, "get_data")
    return loader.get_data(os.path.join(os.path.dirname(__file__), "prelude.lua"))


class LuaEnv:
    """The Lua runtime of one test file plus the glue to call Python from it.

    `host_wrapper(obj)` turns host objects returned by binding methods into
    bindings (it is given by the file state, which caches one binding per host
    object so `provium.web == web` holds).
    """

    # True once the file has ended.  A class attribute on purpose: Lua runs the
    # last `__gc` finalizers while the runtime is torn down, possibly after this
    # object's own attributes are gone; the class default then still says so.
    closed = True
    CLOSED_TEXT = ("provium objects cannot be used after the file has ended "
                   "(a `__gc` finalizer running at the end of the file?)")

    def __init__(self, *, timed_out: Callable[[], bool], timeout_message: Callable[[], str],
                 sleep: Callable[[float], None], now: Callable[[], float],
                 host_wrapper: Callable[[Any], Any] | None = None,
                 before_call: Callable[[str | None], None] | None = None) -> None:
        self.closed = False
        self.host_wrapper = host_wrapper
        self.before_call = before_call
        self.rt = lupa_mod.LuaRuntime(
            encoding=None,
            unpack_returned_tuples=True,
            register_eval=False,
            register_builtins=False,
            attribute_handlers=(self._getattr, self._setattr),
        )
        self._methods: dict[tuple[type, str], Any] = {}
        self.interrupter = Interrupter()
        g = self.rt.globals()

        def thread_started(addr: bytes, tag: bytes) -> None:
            self.interrupter.thread_started(parse_address(addr), tag.decode())

        def duration(value: Any, what: bytes, default: float) -> tuple[bool, Any]:
            # The host's one duration parser, for the prelude's `wait_until`:
            # (true, seconds) or (false, message), so Lua raises at its caller.
            try:
                secs = parse_duration(to_py(value), what.decode(), allow_none=True)
            except LuaApiError as exc:
                return False, str(exc).encode()
            except Exception as exc:  # noqa: BLE001 - an ArgumentError, worded for the user
                return False, message_of(exc).encode()
            return True, default if secs is None else secs

        py = self.rt.table_from({
            b"duration": duration,
            b"timed_out": timed_out,
            b"timeout_message": lambda: timeout_message().encode(),
            b"sleep": sleep,
            b"now": now,
            b"quote": failtext.quote,
            b"diff": failtext.diff,
            b"thread_started": thread_started,
        })
        H = self.rt.execute(_prelude_source(), py, name=PRELUDE_CHUNK)
        g[b"python"] = None
        # Fetch every prelude helper now: attribute access on a Lua table from
        # inside a Lua->Python callback misbehaves in lupa (returns a tuple).
        self.H = _Helpers({k.decode(): v for k, v in H.items()})
        # Any Python object shares lupa's metatable; patch it once.
        self.H.patch_pyobject_meta(_Sample(None))
        self.interrupter.adopt_main(parse_address(self.H.main_thread()))
        self.g = g
        # lupa's Lua is built without LUA_USE_POSIX, so its os.tmpname only makes
        # up a name; Lua on Linux creates the file (mkstemp), and so do we.
        g[b"os"][b"tmpname"] = self.wrap(_tmpname)

    # ---- access control ------------------------------------------------------------

    def _getattr(self, obj: Any, key: Any) -> Any:
        if self.closed:
            raise LuaApiError(self.CLOSED_TEXT)
        if not isinstance(obj, Binding):
            raise LuaApiError(f"attempt to index a host value ({key_text(key) or key!r}); "
                              "only provium objects can be indexed")
        name = key_text(key)
        if name is None:
            raise obj.unknown_key(repr(key))
        if name in obj.LUA_METHODS:
            return self.method_function(type(obj), name)
        return self.to_lua(obj.lua_index(name))

    def _setattr(self, obj: Any, key: Any, value: Any) -> None:
        if not isinstance(obj, Binding):
            raise LuaApiError("attempt to modify a host value; only provium objects accept fields")
        name = key_text(key)
        if name is None:
            raise LuaApiError(f"{obj.KIND}: cannot set key {key!r}")
        obj.lua_newindex(name, value)

    # ---- calling Python from Lua ---------------------------------------------------

    def method_function(self, cls: type[Binding], name: str) -> Any:
        """The Lua function implementing `cls`'s method `name` (one per class)."""
        fn = self._methods.get((cls, name))
        if fn is None:
            impl = cls.LUA_METHODS[name]
            label = f"{cls.KIND}:{name}"

            def check_self(obj: Any = None, *args: Any) -> Any:
                if not isinstance(obj, cls):
                    raise LuaApiError(f"{label}: call it with a colon, as {label}(...) "
                                      f"(the object was not passed; got a {lua_type(obj)} first)")
                return impl(obj, *args)

            fn = self.wrap(check_self, label)
            self._methods[(cls, name)] = fn
        return fn

    def wrap(self, pyfn: Callable[..., Any], label: str | None = None) -> Any:
        """A Lua function calling `pyfn`; a Python exception becomes a Lua error
        raised at the caller's line, with its message only (no traceback).
        `label` (`vm:run`) names the method for `before_call`."""
        env = self

        def call(*args: Any) -> Any:
            # The host words its errors for this caller: Lua's names (host/pynames.py).
            token = LUA_CALLER.set(True)
            try:
                return guarded(*args)
            finally:
                LUA_CALLER.reset(token)

        def guarded(*args: Any) -> Any:
            try:
                if env.closed:
                    raise LuaApiError(env.CLOSED_TEXT)
                if env.before_call is not None:
                    env.before_call(label)
                result = pyfn(*args)
                if isinstance(result, Multi):
                    return (True, *[env.to_lua(v) for v in result])
                return (True, env.to_lua(result))
            except LuaError as exc:
                return (0, _lua_error_text(exc).encode())
            except PositionedError as exc:
                return (0, str(exc).encode())
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - every error becomes a Lua error
                return (False, message_of(exc).encode())

        return self.H.wrap(call)

    # ---- values --------------------------------------------------------------------

    def table(self, items: dict | None = None, seq: list | tuple | None = None) -> Any:
        t = self.rt.table()
        if seq is not None:
            for i, v in enumerate(seq, 1):
                if v is not None:
                    t[i] = self.to_lua(v)
        if items is not None:
            for k, v in items.items():
                if v is not None:
                    t[self.to_lua(k)] = self.to_lua(v)
        return t

    def to_lua(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, bytes, Binding)):
            return value
        if isinstance(value, str):
            # A Python str would reach Lua as an opaque object: always hand over bytes.
            return value.encode("utf-8", "surrogateescape")
        if lupa_mod.lua_type(value) is not None:
            return value
        if isinstance(value, dict):
            return self.table(items=value)
        if isinstance(value, (list, tuple)):
            return self.table(seq=value)
        if self.host_wrapper is not None:
            wrapped = self.host_wrapper(value)
            if wrapped is not None:
                return wrapped
        raise TypeError(f"no Lua form for a {type(value).__name__}")

    def set_global(self, name: str, value: Any) -> None:
        self.g[name.encode()] = self.to_lua(value)

    def get_global(self, name: str) -> Any:
        return self.g[name.encode()]

    def prepend_package_path(self, roots: list[str]) -> None:
        package = self.g[b"package"]
        parts = []
        for r in roots:
            r = r.rstrip("/") or "/"
            parts.append(f"{r}/?.lua;{r}/?/init.lua")
        if parts:
            package[b"path"] = (";".join(parts) + ";").encode() + package[b"path"]


def _tmpname() -> bytes:
    """os.tmpname as Lua on Linux does it: mkstemp on /tmp/lua_XXXXXX, the file left in place."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix="lua_", dir="/tmp")
    except OSError as exc:
        raise LuaApiError(f"os.tmpname: unable to generate a unique filename ({exc.strerror or exc})") from None
    os.close(fd)
    return name.encode()


def _lua_error_text(exc: Exception) -> str:
    """A LuaError's message without the traceback lupa appends."""
    text = str(exc)
    cut = text.find("\nstack traceback:")
    return text[:cut] if cut >= 0 else text


class _Helpers:
    """The prelude's helper functions, looked up once (see LuaEnv.__init__)."""

    def __init__(self, fns: dict[str, Any]) -> None:
        self.__dict__.update(fns)

    def __getattr__(self, name: str) -> Any:  # the prelude's functions, for the type checker
        raise AttributeError(f"the prelude has no helper `{name}`")


class _Sample(Binding):
    """A throwaway Python object, only used to reach lupa's shared metatable."""

    KIND = "sample"

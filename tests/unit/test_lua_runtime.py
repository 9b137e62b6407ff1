"""The restricted Lua state: only declared methods are reachable, errors are
one line with the caller's file:line, never a Python traceback."""

import time

import pytest

from provium.lua.binding import Binding, Multi, method
from provium.lua.runtime import LuaEnv


class Thing(Binding):
    KIND = "thing"

    def __init__(self):
        super().__init__(None)
        self.secret = "hidden"

    @method()
    def double(self, *a):
        return a[0] * 2

    @method()
    def pair(self, *a):
        return Multi((1, "two"))

    @method()
    def table(self, *a):
        return {"list": [1, 2, None, 4], "name": "t"}

    @method()
    def boom(self, *a):
        raise ValueError("internal detail")

    def lua_index(self, key):
        if key == "field":
            return "value"
        return super().lua_index(key)

    def __str__(self):
        return "thing()"


@pytest.fixture()
def run():
    env = LuaEnv(timed_out=lambda: False, timeout_message=lambda: "", sleep=time.sleep, now=time.monotonic)
    env.set_global("thing", Thing())
    env.set_global("fn", env.wrap(lambda *a: "wrapped"))

    def go(code):
        fn = env.H.load_chunk(code.encode(), b"@chunk.lua")
        res = env.H.call(fn)
        return res[1:] if res[0] else ("ERROR", res[1].decode())

    return go


def test_methods_fields_and_values(run):
    assert run("return thing:double(21)") == (42,)
    assert run("local a, b = thing:pair(); return a, b") == (1, b"two")
    assert run("local t = thing:table(); return t.list[4], t.list[3], t.name") == (4, None, b"t")
    assert run("return thing.field, tostring(thing), type(thing)") == (b"value", b"thing()", b"userdata")
    assert run("return thing == thing") == (True,)


@pytest.mark.parametrize("code, msg", [
    ("local x = thing.secret", "chunk.lua:1: thing: no method or field `secret` (methods: boom, double, pair, table)"),
    ("local x = thing.__class__", "chunk.lua:1: thing: no method or field `__class__`"),
    ("thing.field = 1", "chunk.lua:1: thing: cannot set field `field`"),
    ("local x = thing.double.__globals__", "chunk.lua:1: attempt to index a function value"),
    ("local x = thing.double(5)", "thing:double: call it with a colon"),
    ("local x = thing:boom()", "chunk.lua:1: internal error (ValueError: internal detail)"),
    ("local x = thing(1)", "chunk.lua:1: attempt to call a thing value"),
    ("local x = python.builtins", "chunk.lua:1: attempt to index a nil value (global 'python')"),
])
def test_access_is_restricted(run, code, msg):
    status, text = run(code)
    assert status == "ERROR"
    assert msg in text
    assert "Traceback" not in text and ".py" not in text


def test_python_functions_are_opaque(run):
    status, text = run("""
        for i = 1, 10 do
          local name, up = debug.getupvalue(fn, i)
          if type(up) == "userdata" then return up.__globals__ end
        end
        error("no Python upvalue found")
    """)
    assert status == "ERROR" and "only provium objects can be indexed" in text, text


def test_metatable_is_hidden(run):
    assert run("return getmetatable(thing)") == (b"provium object",)
    status, text = run("setmetatable(thing, {})")
    assert status == "ERROR" and "bad argument #1 to 'setmetatable' (table expected, got provium object)" in text


def test_debug_metatable_is_still_lupas(run):
    # Only the patched __index/__newindex run user-visible code; the type is unchanged.
    assert run("return type(debug.getmetatable(thing).__index)") == (b"function",)


def test_objects_used_after_the_file_ended_get_a_clear_error():
    """Lua runs the last `__gc` finalizers while the runtime is torn down; a provium
    object used there said `'LuaEnv' object has no attribute '_methods'`."""
    env = LuaEnv(timed_out=lambda: False, timeout_message=lambda: "", sleep=time.sleep, now=time.monotonic)
    env.set_global("thing", Thing())
    env.set_global("fn", env.wrap(lambda *a: "wrapped"))
    env.closed = True
    for code in ("return thing:double(21)", "return fn()"):
        res = env.H.call(env.H.load_chunk(code.encode(), b"@chunk.lua"))
        assert not res[0] and b"provium objects cannot be used after the file has ended" in res[1]
    del env.__dict__["_methods"]  # what teardown leaves: the class default still says closed
    env.__dict__.pop("closed")
    res = env.H.call(env.H.load_chunk(b"return thing:double(21)", b"@chunk.lua"))
    assert not res[0] and b"after the file has ended" in res[1]

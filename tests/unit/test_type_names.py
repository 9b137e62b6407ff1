"""The Lua-flavoured type names in error messages: host's `type_name` and lua's `lua_type`.

Both start from host.values.plain_type_name; they differ only where Lua's view differs
(lupa's own objects; other Python objects are userdata to Lua)."""

import lupa.lua54 as lupa_mod

from provium.host.values import type_name
from provium.lua.convert import lua_type


def test_names_of_python_values():
    cases = [  # value, type_name, lua_type
        (None, "nil", "nil"), (True, "boolean", "boolean"), (3, "number", "number"),
        (2.5, "number", "number"), (b"x", "string", "string"), ("x", "string", "string"),
        (bytearray(b"x"), "string", "userdata"), ({}, "table", "userdata"), ([1], "table", "userdata"),
        ((1,), "table", "userdata"), (len, "function", "userdata"), (object(), "object", "userdata"),
    ]
    for value, host_name, lua_name in cases:
        assert (type_name(value), lua_type(value)) == (host_name, lua_name), value


def test_names_of_lua_values():
    rt = lupa_mod.LuaRuntime(encoding=None)
    table, fn, co = rt.eval("{}, function() end, coroutine.create(function() end)")
    assert [lua_type(v) for v in (table, fn, co, rt.eval("io.stdout"))] == ["table", "function", "thread", "userdata"]
    assert [type_name(v) for v in (table, fn)] == ["table", "function"]
    # Lua's own type() agrees for a table and a function handed back (a not-yet-started
    # coroutine is the exception: lupa wraps it as a function, lua_type names what the user made)
    lua_type_of = rt.eval("function(v) return type(v) end")
    assert [lua_type_of(v) for v in (table, fn)] == [b"table", b"function"]

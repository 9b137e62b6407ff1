"""The `json` global: encode/decode rules of spec/json.md, in a bare Lua state."""

import time

import pytest

from provium.lua import json as lua_json
from provium.lua.runtime import LuaEnv


@pytest.fixture(scope="module")
def lua():
    env = LuaEnv(timed_out=lambda: False, timeout_message=lambda: "", sleep=time.sleep, now=time.monotonic)
    lua_json.install(env)

    def run(code: str):
        fn = env.H.load_chunk(code.encode(), b"=test")
        assert not isinstance(fn, tuple), fn
        res = env.H.call(fn)
        return res[1:] if res[0] else ("ERROR", res[1].decode())

    return run


@pytest.mark.parametrize("expr, out", [
    ("{1, 2, 3}", "[1,2,3]"),
    ("{}", "{}"),
    ("{a = 1, b = {true, false}}", '{"a":1,"b":[true,false]}'),
    ("{[1] = 1, [3] = 3}", "[1,null,3]"),
    ("{1, 2, name = 'x'}", '{"1":1,"2":2,"name":"x"}'),
    ("{[1.0] = 'a', [2] = 'b'}", '["a","b"]'),
    ("{z = 1, a = 2, m = 3}", '{"a":2,"m":3,"z":1}'),
    ("{[true] = 1, [2.5] = 2, [3.0] = 3, [-1] = 4}", '{"-1":4,"2.5":2,"3":3,"true":1}'),
    ("{a = 1, b = nil}", '{"a":1}'),
    ("0/0", "null"),
    ("math.huge", "null"),
    ("1.5", "1.5"),
    ("3.0", "3.0"),
    ("1e300", "1e300"),
    ("1e-7", "1e-7"),
    ("math.maxinteger", "9223372036854775807"),
    ("nil", "null"),
    ("'a\"b\\\\c\\n\\1/é'", '"a\\"b\\\\c\\n\\u0001/é"'),
])
def test_encode(lua, expr, out):
    assert lua(f"return json.encode({expr})") == (out.encode(),)


@pytest.mark.parametrize("expr, msg", [
    ("print", "json.encode: unsupported value type `function`"),
    ("coroutine.create(print)", "json.encode: unsupported value type `thread`"),
    ("{[{}] = 1}", "json.encode: table key must be string, number, or boolean (got `table`)"),
    ("'\\255'", "not valid UTF-8"),
    ("{[1e9] = 1}", "array too sparse"),
])
def test_encode_errors(lua, expr, msg):
    status, text = lua(f"local s = json.encode({expr}); return s")
    assert status == "ERROR" and msg in text
    assert text.startswith("test:1: ")


def test_encode_cycles_are_refused(lua):
    status, text = lua("local t = {}; t.self = t; return json.encode(t)")
    assert status == "ERROR" and "cycle detected" in text
    # the same table twice (not a cycle) is fine
    assert lua("local s = {1}; return json.encode({s, s})") == (b"[[1],[1]]",)


def test_decode(lua):
    got = lua('''
        local d = json.decode('{"a":[1,null,3],"b":null,"c":18446744073709551615,"d":1e10,'
                              .. '"e":3.0,"f":"\\\\u00e9","g":{"1":true},"h":9223372036854775807,"i":-5}')
        return d.a[1], d.a[2], d.a[3], d.b, d.c, math.type(d.c), math.type(d.d), math.type(d.e),
               d.f, d.g["1"], d.h, math.type(d.i), d.c & 0xFF
    ''')
    assert got == (1, None, 3, None, -1, b"integer", b"float", b"float", "é".encode(), True,
                   2**63 - 1, b"integer", 255)
    assert lua("return json.decode('null')") == (None,)
    assert lua("return json.decode(' [] ')")[0] is not None
    assert lua("return json.decode(5)") == (5,)
    assert lua("return json.decode('1e400')") == (float("inf"),)
    assert lua("""return json.encode(json.decode('{"k": null}'))""") == (b"{}",)
    assert lua("return json.decode('123456789012345678901234567890')") == (1.2345678901234568e29,)


@pytest.mark.parametrize("text, msg", [
    ("{", "json.decode: expecting property name enclosed in double quotes at line 1 column 2"),
    ("", "json.decode: expecting value at line 1 column 1"),
    ("NaN", "`NaN` is not valid JSON"),
    ('"\\\\ud800"', "lone surrogate"),
    ("[1] x", "extra data at line 1 column 5"),
])
def test_decode_errors(lua, text, msg):
    status, err = lua(f"return json.decode('{text}')")
    assert status == "ERROR" and msg in err, err


def test_decode_type_errors(lua):
    status, err = lua("return json.decode({})")
    assert status == "ERROR" and "json.decode: argument #1 must be a string, got table" in err
    status, err = lua("return json.decode('\\255')")
    assert status == "ERROR" and "not valid UTF-8" in err


def test_round_trip(lua):
    assert lua("""
        local v = {name = "x", list = {1, 2.5, "three", {nested = true}}, n = -7}
        return json.encode(json.decode(json.encode(v))) == json.encode(v)
    """) == (True,)

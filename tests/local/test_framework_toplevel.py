"""Top-level globals: pack/unpack, wait_until, file-scope settings, require roots."""

from test_lua_support import line_of, run_lua


def test_pack_unpack_both_call_forms(tmp_path):
    r = run_lua(tmp_path, '''
        test("colon", function(t)
          local s = provium:pack(">I4", 0x01020304)
          t:assert_eq(s, "\\1\\2\\3\\4")
          local v, nextpos = provium:unpack(">I4", s)
          t:assert_eq(v, 0x01020304); t:assert_eq(nextpos, 5)
        end)
        test("dot", function(t)
          local s = provium.pack("<i2 z", -2, "hi")
          local a, b = provium.unpack("<i2 z", s)
          t:assert_eq(a, -2); t:assert_eq(b, "hi")
          t:assert_eq(type(provium.pack), "function")
        end)
        test("sub-lab too", function(t)
          local l = provium:lab("p")
          t:assert_eq(l:unpack("B", l:pack("B", 7)), 7)
        end)
    ''')
    r.assert_all_passed()


WAIT = '''
test("returns the value", function(t)
  local n = 0
  local v = wait_until(function() n = n + 1; if n >= 3 then return "ready" end end, {interval = "1ms"})
  t:assert_eq(v, "ready")
  t:assert_eq(n, 3)
end)
test("times out", function(t)
  wait_until(function() return false end, {timeout = 0.05, interval = 0.01, desc = "the moon"})
end)
test("shows the last value", function(t)
  wait_until(function() return nil, "3 jobs left" end, {timeout = 0.02, interval = 0.005})
end)
test("string timeout", function(t)
  wait_until(function() return nil end, {timeout = "20ms", interval = "5ms"})
end)
test("predicate error", function(t)
  wait_until(function() error("pred broke") end)
end)
test("runs once with zero timeout", function(t)
  local n = 0
  pcall(wait_until, function() n = n + 1 end, {timeout = 0})
  t:assert_eq(n, 1)
end)
test("bad unit", function(t) wait_until(function() return true end, {timeout = "5fortnights"}) end)
test("bare number string", function(t) t:assert_eq(wait_until(function() return 7 end, {timeout = "5"}), 7) end)
test("nan timeout", function(t) wait_until(function() return false end, {timeout = 0/0}) end)
test("huge timeout", function(t) wait_until(function() return false end, {timeout = math.huge}) end)
test("negative timeout", function(t) wait_until(function() return false end, {timeout = -1}) end)
test("negative interval", function(t) wait_until(function() return false end, {interval = "-5ms"}) end)
test("overflowing interval", function(t) wait_until(function() return false end, {interval = 1e300}) end)
test("bad type", function(t) wait_until(function() return true end, {timeout = true}) end)
test("bad key", function(t) wait_until(function() return true end, {tmeout = 1}) end)
test("bad pred", function(t) wait_until(42) end)
'''


def test_wait_until(tmp_path):
    r = run_lua(tmp_path, WAIT)
    assert r.status("returns the value") == "passed"
    assert r.message("times out") == (f"{r.path}:{line_of(WAIT, 'the moon')}: wait_until: the moon not met "
                                      "within 0.05s (last value: false)")
    assert r.message("shows the last value").endswith('not met within 0.02s (last value: nil, "3 jobs left")')
    assert r.message("string timeout").endswith("wait_until: condition not met within 0.02s (last value: nil)")
    assert r.message("predicate error") == f"{r.path}:{line_of(WAIT, 'pred broke')}: pred broke"
    assert r.status("runs once with zero timeout") == "passed"
    # One duration parser for Lua and the host: the same spellings, the same refusals.
    assert r.message("bad unit").endswith("wait_until: timeout: cannot parse `5fortnights` (expected a number of "
                                          "seconds, or a string like `500ms`, `5s`, `2m`, `1h` (bare `5` = seconds))")
    assert r.status("bare number string") == "passed"
    assert r.message("bad type").endswith("wait_until: timeout: expected number|string, got boolean")
    assert r.message("nan timeout").endswith("wait_until: timeout: must be a finite, non-negative number (got NaN)")
    assert r.message("huge timeout").endswith("wait_until: timeout: must be a finite, non-negative number (got inf)")
    assert r.message("negative timeout").endswith("wait_until: timeout: must be a finite, non-negative number (got -1.0)")
    assert r.message("negative interval").endswith("wait_until: interval: must be a finite, non-negative number "
                                                   "(got -0.005)")
    assert r.message("overflowing interval") == (
        f"{r.path}:{line_of(WAIT, 'overflowing interval')}: wait_until: interval: 1e+300 seconds is too long "
        "(at most 1e+09 s, about 31 years; for no limit leave it out)")
    assert r.message("bad key").endswith("wait_until: unknown option `tmeout` (valid: desc, interval, timeout)")
    assert "predicate) must be a function, got number" in r.message("bad pred")


def test_file_scope_settings(tmp_path):
    r = run_lua(tmp_path, '''
        provium.timeout = "30s"
        provium.reset_between_tests = false
        test("read back", function(t)
          t:assert_eq(provium.timeout, "30s")
          t:assert_eq(provium.reset_between_tests, false)
        end)
        test("not in a test", function(t) provium.timeout = 5 end)
    ''')
    assert r.status("read back") == "passed"
    assert "cannot set `provium.timeout` inside a test body" in r.message("not in a test")
    r = run_lua(tmp_path, 'provium.timeot = 5\n')
    assert r.outcome.chunk_error == (f"{r.path}:1: cannot set `provium.timeot`: not a recognised file-scope "
                                     "config key. Known keys: reset_between_tests, timeout")
    r = run_lua(tmp_path, 'provium.reset_between_tests = true\ntest("t", function(t) end)\n')
    assert r.outcome.chunk_error is None and r.status("t") == "passed"


def test_require_from_the_test_dir_and_config_roots(tmp_path):
    shared = tmp_path / "shared"
    (tmp_path / "provium.toml").write_text(f'[provium]\nroots = ["{shared}"]\n')
    r = run_lua(tmp_path, '''
        local h = require("helpers.math")
        local s = require("lib")
        test("helpers", function(t)
          t:assert_eq(h.double(21), 42)
          t:assert_eq(s.name, "shared lib")
        end)
    ''', files={"helpers/math.lua": "return {double = function(x) return 2 * x end}\n",
                "shared/lib/init.lua": 'return {name = "shared lib"}\n'},
        config_path=str(tmp_path / "provium.toml"))
    r.assert_all_passed()


def test_globals_present_and_python_hidden(tmp_path):
    r = run_lua(tmp_path, '''
        test("globals", function(t)
          t:assert_eq(type(json), "table")
          t:assert_eq(type(test), "function")
          t:assert_eq(type(todo), "function")
          t:assert_eq(type(wait_until), "function")
          t:assert_eq(type(provium), "userdata")
          t:assert_eq(python, nil)
          t:assert_eq(provium:name(), "test:globals")
          t:assert_contains(_PROVIUM_SOURCE_PATH, "x.test.lua")
          t:assert_eq(_provium_current_test, "globals")
          t:assert_eq(_provium_in_test, true)
          t:assert_eq(getmetatable(provium), "provium object")
        end)
        test("os.exit refused", function(t) os.exit(1) end)
    ''')
    assert r.status("globals") == "passed", r.message("globals")
    assert "os.exit is not available" in r.message("os.exit refused")

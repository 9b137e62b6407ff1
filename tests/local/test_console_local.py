"""`vm:console()` on the local backend: no guest serial console there, so the log
is empty and the socket methods refuse with a clear error (the reference's behaviour)."""

from test_lua_support import run_lua

SRC = '''
local vm = provium:vm("a", "linux")
local c0 = vm:console()                 -- before boot: allowed, opens nothing
test("before boot", function(t)
  t:assert_eq(c0:read_log(), "")
  local e = t:assert_raises(function() c0:read() end)
  t:assert_contains(e, "console:read: vm `a` is not booted")
end)
test("booted, local backend", function(t)
  vm:boot()
  local c = vm:console()
  t:assert_eq(c:read_log(), "")
  t:assert_contains(t:assert_raises(function() c:read() end),
                    "console:read: VMM does not expose a console socket")
  t:assert_contains(t:assert_raises(function() c:write("x\\n") end),
                    "console:write needs a bidirectional chardev (QEMU only)")
  t:assert_contains(t:assert_raises(function() c:expect("login:", "10ms") end),
                    "keeps no console log")
  c:close(); c:close()
end)
test("bad arguments", function(t)
  local c = vm:console()
  t:assert_contains(t:assert_raises(function() c:write("x", {timeout_ms = 5}) end),
                    "opts.timeout_ms is not supported (use `timeout = \\"500ms\\"` or `timeout = 0.5`)")
  t:assert_contains(t:assert_raises(function() c:write("x", {bogus = 1}) end),
                    "console:write: unknown option `bogus` (valid: timeout)")
  t:assert_contains(t:assert_raises(function() c:write("x", {timeout = -1}) end), "console:write timeout")
  t:assert_contains(t:assert_raises(function() c:write(42) end), "console:write")
  t:assert_contains(t:assert_raises(function() c:expect("") end), "must not be empty")
  t:assert_contains(t:assert_raises(function() c:read_log(1) end), "console:read_log")
  t:assert_contains(t:assert_raises(function() c.read_log() end), "call it with a colon")
end)
'''


def test_console_on_the_local_backend(tmp_path):
    r = run_lua(tmp_path, SRC)
    r.assert_all_passed()

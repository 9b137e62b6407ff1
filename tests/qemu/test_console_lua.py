"""The console from Lua on a real guest, and the console's last lines in the
message of a test whose guest hung.  One file run, one VM."""

import sys
from pathlib import Path

import pytest
from qemu_util import needs_qemu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "local"))
from test_lua_support import run_lua

from provium.runner.settings import RunSettings

pytestmark = [pytest.mark.qemu, needs_qemu]

SRC = '''
local vm = provium:vm("c", "linux"):boot()
test("console from Lua", function(t)
  local c = vm:console()
  local s = c:read()
  t:assert_eq(tostring(s), "console_stream")
  c:write("echo lua-wrote-$((1+1))\\n")
  s:expect("lua-wrote-2", "20s")
  t:assert_eq(c:expect("lua-wrote-2", "5s"), "lua-wrote-2")
  t:assert_contains(c:read_log(), "BusyBox")
  local site = s:creation_site()
  t:assert(site.file:sub(-10) == "x.test.lua" and site.line == 5)
  s:close()
  t:assert(s:eof())
end)
test("hung guest", {timeout = "3s"}, function(t)
  vm:run("echo hung-guest-marker > /dev/console; sleep 100")
end)
'''


def test_console_from_lua_and_lines_in_a_timeout_message(tmp_path):
    r = run_lua(tmp_path, SRC, settings=RunSettings(vmm="qemu"))
    assert r.status("console from Lua") == "passed", r.message("console from Lua")
    assert r.status("hung guest") == "timed_out"
    msg = r.message("hung guest")
    assert "--- console of vm `c` (last lines) ---\n" in msg, msg
    assert "hung-guest-marker" in msg and msg.rstrip().endswith("--- end of console ---")
    assert len(msg) < 3000
    failed = [e for e in r.events if e.KIND == "test_failed"]
    assert "hung-guest-marker" in failed[0].console_excerpt

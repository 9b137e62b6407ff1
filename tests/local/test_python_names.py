"""One error, two wordings: Python callers see `VM.run`, Lua test files keep `vm:run`.

The host words each message once with Lua's names; `host/pynames.py` rewrites
them for a Python caller on the way out of a public method (docs/python.md)."""

from __future__ import annotations

import pytest
from test_lua_support import line_of, run_lua

import provium
from provium.host.pynames import called_from_lua, python_text

LUA = '''
local vm = provium:vm("box", "linux"):boot()
test("write_file", function(t) vm:write_file("/tmp/x", "", {colour = 1}) end)
test("snapshot", function(t) vm:snapshot("/nonexistent-provium-dir/x") end)
test("disk", function(t) vm:attach_disk({colour = 1}) end)
'''


def test_python_callers_see_python_names():
    with provium.Session.open(vmm="local") as s:
        vm = s.lab().vm("box", "linux").boot()
        with pytest.raises(provium.ArgumentError) as e:
            vm.write_file("/tmp/x", b"", colour=1)
        assert str(e.value) == "VM.write_file: unknown option `colour` (valid: mode, perm)"
        with pytest.raises(provium.ArgumentError, match=r"^VM\.snapshot: directory `/nonexistent-provium-dir` "):
            vm.snapshot("/nonexistent-provium-dir/x")
        with pytest.raises(provium.ArgumentError, match=r"^VM\.attach_disk: unknown option `colour`"):
            vm.attach_disk(colour=1)
        # Python code driving the host on behalf of Lua (the runner) keeps Lua's names.
        with called_from_lua(), pytest.raises(provium.ArgumentError, match=r"^vm:snapshot: path"):
            vm.snapshot(3)


def test_lua_keeps_its_names(tmp_path):
    r = run_lua(tmp_path, LUA)
    assert r.message("write_file") == (f"{r.path}:{line_of(LUA, 'write_file')}: vm:write_file: unknown option "
                                       "`colour` (valid: mode, perm)")
    assert r.message("snapshot").endswith(": vm:snapshot: directory `/nonexistent-provium-dir` does not exist")
    assert ": vm:attach_disk: unknown option `colour`" in r.message("disk")


def test_the_rewrite_leaves_paths_lines_and_the_guest_console_alone():
    assert python_text("proc:wait: bad; worker:kill and lab:restore failed: a: vm:restore") == \
        "Process.wait: bad; Worker.kill and Lab.restore failed: a: VM.restore"
    assert python_text("/tmp/a.test.lua:12: x, file:///vm:run, unix:/s/vm:x, port held by disk:a") == \
        "/tmp/a.test.lua:12: x, file:///vm:run, unix:/s/vm:x, port held by disk:a"
    assert python_text("console:read_until timed out; console:expect") == \
        "ConsoleStream.read_until timed out; Console.expect"
    console = "vm:run: timed out\n--- guest console (last bytes) ---\nvm:run in the guest\n"
    assert python_text(console) == "VM.run: timed out\n--- guest console (last bytes) ---\nvm:run in the guest\n"

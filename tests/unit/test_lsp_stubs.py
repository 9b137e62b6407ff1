"""`provium lsp-setup`: the stubs name every method the bindings expose, are valid
Lua, and the command writes what an editor needs.  (lua-language-server is not
packaged for this machine's Debian, npm or PyPI mirrors, so the check of the
annotations is a Lua compile of the file through lupa.)"""

import json
import re

import lupa.lua54 as lupa_mod
from click.testing import CliRunner

from provium.cli.main import group
from provium.lua import stubs
from provium.lua.binding import Binding

METHOD = re.compile(r"^function (provium_\w+):(\w+)\(", re.MULTILINE)


def test_stub_names_equal_the_bindings_methods():
    text = stubs.generate()
    found = {(cls, name) for cls, name in METHOD.findall(text) if cls != "provium_TestContext"}
    expected = {(stubs.lua_class(b).replace(".", "_"), m) for b in stubs.bindings() for m in b.LUA_METHODS}
    assert found == expected
    # every binding class a test can meet is there (walked, not listed)
    assert {"provium.Vm", "provium.Lab", "provium.Console", "provium.Stream", "provium.RunResult"} <= {
        stubs.lua_class(b) for b in stubs.bindings()}
    assert all(issubclass(b, Binding) for b in stubs.bindings())


def test_stub_has_the_test_context_and_globals():
    text = stubs.generate()
    ctx = set(re.findall(r"^function provium_TestContext:(\w+)\(", text, re.MULTILINE))
    assert {"assert", "assert_eq", "assert_neq", "assert_contains", "assert_raises", "fail", "skip", "log"} <= ctx
    for g in ("function test(name, a, b) end", "function todo(reason) end", "function wait_until(pred, opts) end",
              "function json.encode(", "function json.decode(", "---@type provium.Lab\nprovium = {}"):
        assert g in text
    assert "---@field exit_code integer" in text and "---@field stdout string" in text
    assert "---@param opts? provium.RunOpts\n---@return provium.RunResult\nfunction provium_Vm:run(cmd, opts) end" in text
    assert "---@field kernel_cmdline_append? any" in text  # option tables from the checkers' key lists


def test_stub_is_valid_lua():
    rt = lupa_mod.LuaRuntime()
    ok, err = rt.execute("return function(src) local f, e = load(src, '=types.lua'); return f ~= nil, e end")(
        stubs.generate())
    assert ok, err


def test_lsp_setup_writes_files_and_keeps_an_existing_luarc(tmp_path):
    r = CliRunner().invoke(group, ["lsp-setup", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / ".provium-meta" / "types.lua").read_text() == stubs.generate()
    rc = json.loads((tmp_path / ".luarc.json").read_text())
    assert rc["runtime.version"] == "Lua 5.4" and rc["workspace.library"] == [".provium-meta"]
    assert rc["diagnostics.globals"] == ["test", "todo", "wait_until", "provium", "json"]
    (tmp_path / ".luarc.json").write_text("{}")
    r = CliRunner().invoke(group, ["lsp-setup", str(tmp_path)])
    assert r.exit_code == 0 and "pass --force" in r.output
    assert (tmp_path / ".luarc.json").read_text() == "{}"
    r = CliRunner().invoke(group, ["lsp-setup", "--force", str(tmp_path)])
    assert json.loads((tmp_path / ".luarc.json").read_text()) == rc

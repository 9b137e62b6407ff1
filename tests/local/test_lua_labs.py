"""Labs from Lua: naming, lookups, dot access, sub-labs, membership, batch ops,
scope rules, reserved names, and the parts that are not implemented yet."""

from test_lua_support import no_traceback, run_lua

LABS = '''
local a = provium:vm("a", "linux")
local dc1 = provium:lab("dc1")
local web = dc1:vm("web", "linux")
local anon = provium:lab()

test("names and tostring", function(t)
  t:assert_eq(provium:name(), "test:names and tostring")
  local root = _G.root
  t:assert_eq(root:name(), "provium")
  t:assert_eq(tostring(root), "lab(provium; 1 vm(s))")
  t:assert_eq(dc1:name(), "dc1")
  t:assert_eq(anon:name(), "__lab_1")
end)

test("lookup", function(t)
  t:assert_eq(provium:vm("a"), a)
  t:assert_eq(provium.a, a)
  t:assert_eq(provium.dc1, dc1)
  t:assert_eq(provium.nothing, nil)
  t:assert_eq(provium.web, nil)           -- a sub-lab's VM is not the root's
  t:assert_eq(provium.dc1.web, web)
  t:assert_eq(dc1.a, nil)                 -- a federation sub-lab does not see the root
end)

test("typo lookup", function(t) provium:vm("aa") end)
test("duplicate", function(t) _G.root:vm("a", "linux") end)
test("unknown profile", function(t) provium:vm("z", "no-such-profile") end)
test("shadowing", function(t) provium:vm("a", "linux") end)
test("shadowing lab", function(t) provium:lab("dc1") end)

test("listing", function(t)
  local root = _G.root
  root:vm("c", "linux"); root:vm("b", "linux")
  t:assert_eq(table.concat(root:vm_names(), ","), "a,b,c")
  t:assert_eq(table.concat(root:sub_lab_names(), ","), "__lab_1,dc1")
  t:assert_eq(#root:bridge_names(), 0)
  local m = root:members()
  t:assert_eq(#m, 5)
  t:assert_eq(m[1].kind, "vm"); t:assert_eq(m[1].name, "a")
  t:assert_eq(m[4].kind, "sub_lab"); t:assert_eq(m[4].name, "__lab_1")
  root:remove("c")
  root:remove(root:vm("b"))
  t:assert_eq(table.concat(root:vm_names(), ","), "a")
  root:remove("not-there")
end)

test("include", function(t)
  local side = _G.root:lab("side")
  side:include(a)
  side:include({web})
  t:assert_eq(table.concat(side:vm_names(), ","), "a,web")
  t:assert_eq(side.a, a)
  t:assert_eq(_G.root.a, a)                -- still a member of where it was
  side:remove(a)
  t:assert_eq(side.a, nil)
end)
test("include bad entry", function(t) _G.root:lab("side2"):include({a, "x"}) end)
test("include bad type", function(t) _G.root:include(5) end)
test("remove bad type", function(t) _G.root:remove(true) end)

test("reserved vm", function(t) provium:vm("pack", "linux") end)
test("reserved lab", function(t) provium:lab("vm_fixture") end)
test("ordinary names", function(t) provium:vm("packer", "linux"); provium:lab("unpacked") end)

test("vm arg count", function(t) provium:vm("q", "linux", {}, 4) end)
test("vm opts type", function(t) provium:vm("q", "linux", "big") end)
test("vm name type", function(t) provium:vm(42) end)
test("unknown vm opt", function(t) provium:vm("q", "linux", {memroy = "1G"}) end)

test("fixtures are functions", function(t)
  t:assert_eq(type(provium.vm_fixture), "function")
  t:assert_eq(type(provium.lab_fixture), "function")
end)
test("vm_fixture", function(t) provium.vm_fixture("base") end)
test("bridge", function(t) t:assert_eq(provium:bridge("lan"):name(), "lan") end)
test("barrier", function(t)
  t:assert_eq(provium:barrier("b", 1), true)
  local ok, why = provium:barrier("lone", 2, 0.05)      -- no other caller in this process
  t:assert_eq(ok, false)
  t:assert_contains(why, "timed out after 0.05s with 1 of 2 callers arrived")
  t:assert_eq(provium:barrier("lone", 2, 0), false)      -- the lone arrival was rolled back
end)
test("barrier float count", function(t) provium:barrier("b", 2.0) end)
test("barrier name", function(t) provium:barrier(7, 2) end)
test("barrier timeout", function(t) provium:barrier("b", 2, "5s") end)
test("snapshot", function(t) provium:snapshot(42) end)
test("claim", function(t)
  local root = _G.root
  root:claim({memory = "1G", cpus = 2})
  local ok, err = pcall(function() root:claim({memory = 0}) end)
  t:assert(not ok)
  t:assert_contains(err, "one-shot")
end)
test("claim bad key", function(t) _G.root:lab("x2"):claim({memory_bytes = 5}) end)
'''


def test_labs(tmp_path):
    r = run_lua(tmp_path, "root = provium\n" + LABS)
    assert r.outcome.chunk_error is None, r.outcome.chunk_error
    for name in ("names and tostring", "lookup", "listing", "include", "ordinary names",
                 "fixtures are functions", "claim", "barrier"):
        assert r.status(name) == "passed", (name, r.message(name))
    assert "no vm named `aa` in this lab" in r.message("typo lookup")
    assert r.message("duplicate").endswith("vm name `a` already used in this lab")
    assert "no-such-profile" in r.message("unknown profile") and "not found" in r.message("unknown profile")
    assert r.status("unknown profile") == "failed"  # a per-test failure, not a chunk error
    assert 'provium:vm("a", …): name already declared at a parent scope (lab `provium`)' in r.message("shadowing")
    assert "sub-lab name already declared at a parent scope" in r.message("shadowing lab")
    assert "lab:include: array entries must be userdata" in r.message("include bad entry")
    assert "lab:include expected userdata or array, got number" in r.message("include bad type")
    assert "lab:remove expected name|vm|bridge|lab, got boolean" in r.message("remove bad type")
    for name, word in (("reserved vm", "pack"), ("reserved lab", "vm_fixture")):
        msg = r.message(name)
        assert f"name `{word}` is reserved" in msg
        for reserved in ("vm_fixture", "lab_fixture", "pack", "unpack"):
            assert reserved in msg
    assert r.message("vm arg count").endswith("lab:vm: expected 1, 2, or 3 args, got 4")
    assert r.message("vm opts type").endswith("lab:vm: opts must be a table, got string")
    assert r.message("vm name type").endswith("lab:vm: argument #1 (name) must be a string, got number")
    assert "unknown boot option `memroy` (valid: memory, cpus," in r.message("unknown vm opt")
    assert "fixture `base` not found in any test root" in r.message("vm_fixture")
    assert r.status("bridge") == "passed", r.message("bridge")
    assert "barrier: count must be an integer, got number (a float, even 2.0, is refused)" in r.message("barrier float count")
    assert "barrier: name must be a string, got number" in r.message("barrier name")
    assert "barrier: timeout must be a number of seconds, got string" in r.message("barrier timeout")
    assert "lab:snapshot: argument #1 (dir) must be a string, got number" in r.message("snapshot")
    assert "lab:claim: unknown option `memory_bytes` (valid: cpus, memory)" in r.message("claim bad key")
    for t in r.outcome.tests:
        assert no_traceback(t.message), t.message
        if t.status == "failed":
            assert t.message.startswith(r.path + ":"), t.message  # every error carries file:line


def test_batch_boot_and_shutdown(tmp_path):
    r = run_lua(tmp_path, '''
        local root = provium
        local a = provium:vm("a", "linux")
        local sub = provium:lab("sub")
        local b = sub:vm("b", "linux")
        test("boot all", function(t)
          t:assert_eq(root:boot(), root)            -- chainable, returns the lab
          t:assert_eq(a:state(), "booted")
          t:assert_eq(b:state(), "booted")
          t:assert(a:cid() ~= b:cid())
          root:boot()                               -- already booted members are left alone
          provium:boot()                            -- the test's own lab: no members, nothing to do
        end)
        test("pause on local", function(t) root:pause() end)
        test("shutdown all", function(t)
          root:shutdown()
          t:assert_eq(a:state(), "shutdown")
          t:assert_eq(b:state(), "shutdown")
        end)
    ''')
    assert r.status("boot all") == "passed", r.message("boot all")
    msg = r.message("pause on local")
    assert "batch `pause` failed: {" in msg and "a: " in msg and "sub/b: " in msg
    assert "not yet implemented" in msg
    assert r.status("shutdown all") == "passed", r.message("shutdown all")
    assert sorted(e.vm_name for e in r.kinds("vm_spawned")) == ["a", "b"]
    assert sorted(e.vm_name for e in r.kinds("vm_shutdown")) == ["a", "b"]


def test_scope_rules(tmp_path):
    r = run_lua(tmp_path, '''
        local root = provium
        local shared = provium:vm("shared", "linux"):boot()
        test("creates in the test scope", function(t)
          local v = provium:vm("tmp", "linux"):boot()
          t:assert_eq(provium:vm("tmp"), v)
          t:assert_eq(provium:vm("shared"), shared)    -- lookups fall through to the file
          t:assert_eq(provium.shared, shared)
          t:assert_eq(root.tmp, nil)                   -- not in the file's lab
          t:assert_eq(table.concat(provium:vm_names(), ","), "tmp")
          _G.kept = v
          root:vm("via_root", "linux")                 -- a captured root creates at file scope
        end)
        test("test scope is gone", function(t)
          t:assert_eq(kept:state(), "shutdown")
          t:assert_eq(provium.tmp, nil)
          local again = provium:vm("tmp", "linux")     -- the name is free again
          t:assert_eq(again:state(), "created")
          t:assert_eq(provium.via_root:state(), "created")
          t:assert_eq(shared:state(), "booted")
        end)
        test("sub-labs in a test are cleaned up", function(t)
          local l = provium:lab("scratch")
          l:vm("inner", "linux"):boot()
          _G.inner = l.inner
        end)
        test("after", function(t)
          t:assert_eq(inner:state(), "shutdown")
          t:assert_eq(provium.scratch, nil)
        end)
    ''')
    r.assert_all_passed()


def test_included_members_survive_a_test_scope(tmp_path):
    r = run_lua(tmp_path, '''
        local dc1 = provium:lab("dc1")
        local web = dc1:vm("web", "linux"):boot()
        test("include into the test's lab", function(t)
          provium:include(web)
          t:assert_eq(provium.web, web)
        end)
        test("still running", function(t)
          t:assert_eq(web:state(), "booted")
          t:assert_eq(provium.web, nil)
        end)
    ''')
    r.assert_all_passed()


def test_member_kinds_are_generic():
    """A kind registered later (as bridges and disks are) gets lookups, listing,
    include and remove without any change to the lab."""
    from provium.host.lab import Lab, LabError, _KINDS, register_member_kind
    from provium.host.session import Session
    from provium.vmm import create

    class Widget:
        def __init__(self, name):
            self.name = name
            self.closed = False

        def close(self):
            self.closed = True

    register_member_kind("widget", Widget, 50)
    try:
        with Session(create("local")) as s:
            root = Lab(s)
            scope = Lab(s, "test:x", parents=[root])
            w = root.adopt(Widget("sw"))
            assert scope.find_any("sw") is w                    # falls through to the file root
            assert root.members() == [{"kind": "widget", "name": "sw"}]
            assert root.names("widget") == ["sw"]
            other = root.lab("side")
            other.include(w)
            assert other.find("widget", "sw") is w
            try:
                scope.include(Widget("sw"))
            except LabError as exc:
                assert "widget name `sw` already declared at a parent scope" in str(exc)
            else:
                raise AssertionError("shadowing a parent's widget was allowed")
            other.remove("sw")
            assert other.members() == []
            root.close()
            assert w.closed                                      # adopted members close with their lab
    finally:
        del _KINDS["widget"]

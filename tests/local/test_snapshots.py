"""Snapshots on the local backend: the bookkeeping (preconditions, errors,
handles, lab.json) that does not need a real guest."""

import json
import os

from test_lua_support import no_traceback, run_lua

SNAPS = '''
local vm = provium:vm("a", "linux"):boot()
local dc1 = provium:lab("dc1")
local web = dc1:vm("web", "linux"):boot()

test("open file blocks", function(t)
  vm:write_file(_G.dir .. "/f", "x")
  local f = vm:open_file(_G.dir .. "/f", {read=true})  -- OPEN
  vm:snapshot()
end)

test("tail blocks", function(t)
  local s = vm:tail_file(_G.dir .. "/f")  -- TAIL
  vm:snapshot()
end)

test("not booted", function(t) provium:vm("fresh", "linux"):snapshot() end)
test("restore into shut down", function(t)
  local v = provium:vm("gone", "linux"):boot()
  v:shutdown()
  v:restore("/nonexistent.bin")
end)
test("rollback of a booted vm", function(t)
  local v = provium:vm("rb", "linux"):boot()
  local snap = v:snapshot(_G.dir .. "/rb.bin")
  local p = v:run_async("sleep 30")
  v:restore(snap)
  t:assert_eq(v:state(), "booted")
  t:assert(v:run("true"):ok())
  local ok, err = pcall(function() return p:status() end)
  t:assert(not ok)
  t:assert_contains(err, "from before its reset")
end)
test("restore bad type", function(t) provium:vm("fresh", "linux"):restore(42) end)
test("restore bad userdata", function(t) provium:vm("fresh", "linux"):restore(vm) end)
test("restore missing file", function(t) provium:vm("fresh", "linux"):restore("/nonexistent/x.bin") end)

test("handle", function(t)
  local s = vm:snapshot(_G.dir .. "/a.bin")
  t:assert_eq(tostring(s), "snapshot(" .. _G.dir .. "/a.bin)")
  t:assert_eq(s:path(), _G.dir .. "/a.bin")
  t:assert(s:size() > 0)
  local v2 = provium:vm("v2", "linux")
  v2:restore(s:path())
  t:assert_eq(v2:state(), "booted")
  t:assert(v2:run("true"):ok())
  s:delete(); s:delete()
  t:assert_eq(s:size(), 0)
end)

test("lab", function(t)
  local snap = _G.root:snapshot()
  t:assert_eq(tostring(snap), "lab_snapshot(" .. snap:path() .. ")")
  t:assert(snap:size() > 0)
  local copy = provium:lab("copy")
  copy:restore(snap)
  t:assert_eq(copy:vm("a"):state(), "booted")
  t:assert_eq(copy.dc1:vm("web"):state(), "booted")
  local ok, err = pcall(function() copy:restore(snap) end)
  t:assert(not ok)
  t:assert_contains(err, "vm name `a` already used in lab `copy`")
  _G.labdir = snap:path()
  local d = _G.root:snapshot(_G.dir .. "/labdir")
  t:assert_eq(d, _G.dir .. "/labdir")
end)

test("lab restore bad", function(t) provium:restore(vm) end)
test("lab restore missing", function(t) provium:restore("/nonexistent-dir") end)
'''


def _line(src, marker):
    return next(i for i, line in enumerate(src.splitlines(), 1) if marker in line)


def test_snapshot_bookkeeping(tmp_path):
    src = "_G.dir = " + json.dumps(str(tmp_path)) + "\n_G.root = provium\n" + SNAPS
    r = run_lua(tmp_path, src)
    assert r.outcome.chunk_error is None
    m = r.message("open file blocks")
    assert "vm:snapshot() failed for `a`: 1 open file handle(s), 0 open stream(s)" in m
    assert "- open_file(" in m and f'x.test.lua:{_line(src, "OPEN")} (test "open file blocks")' in m
    assert m.rstrip().endswith("Close streams before snapshotting.")
    m = r.message("tail blocks")
    assert "0 open file handle(s), 1 open stream(s)" in m and "- tail_file(" in m and f"x.test.lua:{_line(src, 'TAIL')}" in m
    assert r.message("not booted").endswith("vm `fresh`: VM not booted (cannot snapshot)")
    assert r.message("restore into shut down").endswith("vm `gone`: VM is shutdown; create a new one (cannot restore)")
    assert r.status("rollback of a booted vm") == "passed", r.message("rollback of a booted vm")
    assert r.message("restore bad type").endswith("vm:restore: expected snapshot|string, got number")
    assert r.message("restore bad userdata").endswith("vm:restore: expected snapshot userdata or path string")
    assert r.message("restore missing file").endswith("snapshot file `/nonexistent/x.bin`: no such file")
    assert r.status("handle") == "passed", r.message("handle")
    assert r.status("lab") == "passed", r.message("lab")
    assert r.message("lab restore bad").endswith("lab:restore: expected lab snapshot userdata or directory string")
    assert "lab:restore: `/nonexistent-dir/lab.json` not found" in r.message("lab restore missing")
    assert all(no_traceback(t.message) for t in r.outcome.tests)
    doc = json.loads((tmp_path / "labdir" / "lab.json").read_text())
    assert doc["vms"] == [
        {"vm_name": "a", "profile": "linux", "snapshot_path": "a.snap"},
        {"vm_name": "dc1/web", "profile": "linux", "snapshot_path": "dc1_web.snap"},
    ]
    assert doc["bridges"] == []
    assert sorted(os.listdir(tmp_path / "labdir")) == ["a.snap", "dc1_web.snap", "lab.json"]
    spawned = [e.vm_name for e in r.kinds("vm_spawned")]
    assert spawned.count("a") == 2 and "v2" in spawned  # the restore into `copy` emits vm_spawned too


def test_lab_part_extension_point(tmp_path):
    from provium.host import labsnap

    seen = []

    class Part:
        key = "widgets"

        def blockers(self, lab):
            return []

        def save(self, lab, snap_dir, vms):
            (snap_dir / "widgets.bin").write_bytes(b"w")
            return {"vms": sorted(vms)}

        def before_vms(self, lab, data, snap_dir):
            seen.append(("before", data, (snap_dir / "widgets.bin").read_bytes()))

        def vm_spec(self, lab, data, vm_path, spec):
            seen.append(("spec", vm_path))
            return spec

        def after_vms(self, lab, data, snap_dir, vms):
            seen.append(("after", sorted(vms)))

    labsnap.register_lab_part(Part())
    try:
        r = run_lua(tmp_path, '''
            local vm = provium:vm("a", "linux"):boot()
            test("t", function(t)
              local root = provium:vm("a") and nil
              local s = _G.root:snapshot()
              provium:lab("copy"):restore(s)
            end)
        '''.replace("local vm", "_G.root = provium\nlocal vm"))
    finally:
        labsnap._PARTS[:] = [p for p in labsnap._PARTS if p.key != "widgets"]
    assert r.status("t") == "passed", r.message("t")
    assert seen == [("before", {"vms": ["a"]}, b"w"), ("spec", "a"), ("after", ["a"])]


def test_part_blockers_refuse_lab_snapshot(tmp_path):
    from provium.host import labsnap
    from provium.host.registry import ResourceMeta

    class Capturing:
        key = "captures"

        def blockers(self, lab):
            return [ResourceMeta("capture", '"lan"', ("net.test.lua", 12), "cap")]

        def save(self, *a):
            return None

    labsnap.register_lab_part(Capturing())
    try:
        r = run_lua(tmp_path, 'local vm = provium:vm("a", "linux"):boot()\n'
                              'test("t", function(t) _G.root:snapshot() end)'.replace("local vm", "_G.root = provium\nlocal vm"))
    finally:
        labsnap._PARTS[:] = [p for p in labsnap._PARTS if p.key != "captures"]
    m = r.message("t")
    assert "lab:snapshot: 1 stream(s) still open" in m
    assert '- capture("lan") created at net.test.lua:12 (test "cap")' in m


def test_reset_between_tests_refuses_file_scope_streams(tmp_path):
    log = tmp_path / "log"
    log.write_text("")
    r = run_lua(tmp_path, f'''
        provium.reset_between_tests = true
        local vm = provium:vm("a", "linux"):boot()
        local s = vm:tail_file("{log}")
        test("t", function(t) end)
    ''')
    err = r.outcome.chunk_error
    assert err.startswith("x.test.lua: cannot use reset_between_tests with file-scope streams")
    assert f'- tail_file ("{log}") at {r.path}:4 opens a stream at file scope' in err
    assert "Either move the stream into a test() block, or set reset_between_tests = false." in err


def test_reset_between_tests_keeps_file_scope_handles(tmp_path):
    r = run_lua(tmp_path, '''
        provium.reset_between_tests = true
        local vm = provium:vm("a", "linux"):boot()
        local p = vm:run_async("sleep 30")
        test("one", function(t) t:assert_eq(vm:state(), "booted") end)
        test("two", function(t) t:assert_eq(vm:state(), "booted"); t:assert(vm:run("true"):ok()) end)
    ''')
    r.assert_all_passed()
    assert [e.vm_name for e in r.kinds("vm_spawned")] == ["a", "a", "a"]

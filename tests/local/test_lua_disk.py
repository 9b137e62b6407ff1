"""Disks on the local backend: graph objects with real sector I/O on their image files
(the reference's conformance_disk cases), and the errors for bad declarations."""

import os

from test_lua_support import run_lua


def conformance(d):
    return f'''
local dir = "{d}"
local vm = provium:vm("d", "linux")
vm:boot({{disks = {{
  {{id = "scratch", scratch = "1M"}},
  {{id = "bytes", scratch = 4096}},
  {{id = "tmpl", template = dir .. "/template.img"}},
  {{id = "plain", path = dir .. "/plain.img"}},
  {{id = "med", scratch = "64K", mediated = true}},
}}}})
test("scratch is exact and zero-filled", function(t)
  local s = vm:disk("scratch")
  t:assert_eq(s:size(), 1048576)
  t:assert_eq(s:read_sectors(0, 1), string.rep("\\0", 512))
  t:assert_eq(vm:disk("bytes"):size(), 4096)
  t:assert_eq(s:id(), "scratch")
end)
test("template is copied, never written", function(t)
  local d = vm:disk("tmpl")
  t:assert_eq(d:read_sectors(0, 1):sub(1, 8), "TEMPLATE")
  d:write_sectors(0, "CHANGED!")
  t:assert_eq(d:read_sectors(0, 1):sub(1, 8), "CHANGED!")
end)
test("sector io on a path image", function(t)
  local d = vm:disk("plain")
  d:write_sectors(2, "hello")
  t:assert_eq(d:read_sectors(2, 1):sub(1, 6), "hello\\0")
  t:assert_eq(#d:read_sectors(7, 4), 512)        -- short read at the end (8 sectors)
  t:assert_eq(d:read_sectors(100, 1), "")        -- past the end: nothing
  d:write_sectors(8, "grow")                     -- verbatim, extends the file
  t:assert_eq(d:size(), 8 * 512 + 4)
end)
test("faults", function(t)
  local d = vm:disk("plain")
  d:fault_inject("eio_read")
  d:fault_inject("slow", {{delay = "10ms"}})
  t:assert_eq(table.concat(d:active_faults(), ","), "eio_read,slow")
  local ok, err = pcall(d.read_sectors, d, 0, 1)
  t:assert(not ok)
  t:assert_contains(tostring(err), "disk:read_sectors: EIO (fault_inject)")
  d:write_sectors(0, "x")                        -- writes still work
  d:fault_inject("eio_write")
  local ok2, err2 = pcall(d.write_sectors, d, 0, "x")
  t:assert_contains(tostring(err2), "disk:write_sectors: EIO (fault_inject)")
  d:clear_faults()
  t:assert_eq(#d:active_faults(), 0)
  t:assert_eq(#d:read_sectors(0, 1), 512)
end)
test("range and count faults", function(t)
  local d = vm:disk("scratch")
  d:fault_inject("eio_read", {{start = 10, count = 2}})
  t:assert_eq(#d:read_sectors(0, 10), 5120)
  t:assert(not pcall(d.read_sectors, d, 11, 1))
  d:fault_inject("eio_read", {{after = 2}})
  d:read_sectors(0, 1); d:read_sectors(0, 1)
  t:assert(not pcall(d.read_sectors, d, 0, 1))
  d:clear_faults()
end)
test("unknown mode", function(t) vm:disk("plain"):fault_inject("melt") end)
test("guest faults need mediated", function(t) vm:disk("plain"):fail_reads() end)
test("fail_after 0", function(t) vm:disk("med"):fail_after(0) end)
test("fail_range count 0", function(t) vm:disk("med"):fail_range(10, 0) end)
test("mediated verbs", function(t)
  local m = vm:disk("med")
  m:fail_range(1, 1)
  t:assert_eq(table.concat(m:active_faults(), ","), "eio_read,eio_write")
  m:clear_faults()
  m:fail_reads()
  t:assert(not pcall(m.read_sectors, m, 0, 1))
  m:clear_faults()
  t:assert_eq(m:power_cut(), 0)
end)
test("attach_disk without image", function(t)
  local a = vm:attach_disk({{id = "model"}})
  t:assert_eq(a:size(), 4294967296)
  t:assert_eq(vm:attach_disk({{id = "m2", size = 1000}}):size(), 1000)
  a:read_sectors(0, 1)
end)
test("attach_disk with image, detach", function(t)
  local a = vm:attach_disk({{id = "hot", image = dir .. "/plain.img"}})
  t:assert_eq(a:read_sectors(2, 1):sub(1, 5), "hello")
  t:assert(vm:disk("hot") ~= nil)
  a:detach(); a:detach()
  t:assert(a:is_detached())
  t:assert(vm:disk("hot"):is_detached())         -- one disk, shared state
  a:read_sectors(0, 1)
end)
test("no such disk", function(t) vm:disk("nope") end)
'''


def test_disk_conformance(tmp_path):
    with open(tmp_path / "template.img", "wb") as f:
        f.write(b"TEMPLATE" + bytes(8192 - 8))
    with open(tmp_path / "plain.img", "wb") as f:
        f.write(bytes(8 * 512))
    r = run_lua(tmp_path, conformance(tmp_path))
    for name in ("scratch is exact and zero-filled", "template is copied, never written", "sector io on a path image",
                 "faults", "range and count faults", "mediated verbs"):
        assert r.status(name) == "passed", (name, r.message(name))
    with open(tmp_path / "template.img", "rb") as f:
        assert f.read(8) == b"TEMPLATE"
    assert "disk:fault_inject: unknown mode `melt` (valid: eio_read, eio_write, slow)" in r.message("unknown mode")
    assert "mediated" in r.message("guest faults need mediated")
    assert "at least 1" in r.message("fail_after 0") and "at least 1" in r.message("fail_range count 0")
    assert "no backing image" in r.message("attach_disk without image")
    assert "disk:read_sectors: disk is detached" in r.message("attach_disk with image, detach")
    assert "vm:disk: no disk `nope` attached to vm `d`" in r.message("no such disk")
    # nothing left behind: scratch images and sockets go with the VM
    assert not [p for p in os.listdir("/tmp") if p == f"provium-disks-{os.getpid()}"]


BAD = '''
test("two sources", function(t) provium:vm("a", "linux"):boot({disks = {{path = "/x", scratch = "1M"}}}) end)
test("no source", function(t) provium:vm("b", "linux"):boot({disks = {{id = "e"}}}) end)
test("bad size", function(t) provium:vm("c", "linux"):boot({disks = {{scratch = "12Q"}}}) end)
test("missing path", function(t) provium:vm("d", "linux"):boot({disks = {{path = "/nonexistent/x.img"}}}) end)
test("missing template", function(t) provium:vm("e", "linux"):boot({disks = {{template = "/nonexistent/t.img"}}}) end)
test("unknown key", function(t) provium:vm("f", "linux"):boot({disks = {{scratch = 1, fmt = "raw"}}}) end)
'''


def test_disk_declaration_errors(tmp_path):
    r = run_lua(tmp_path, BAD)
    assert "needs exactly one source of path, scratch or template (got `path` and `scratch`)" in r.message("two sources")
    assert "disk `e` needs exactly one source of path, scratch or template (got none)" in r.message("no source")
    assert "cannot parse size `12Q`" in r.message("bad size")
    assert "disk `boot0`: no image at `/nonexistent/x.img` (provium does not create one)" in r.message("missing path")
    assert not os.path.exists("/nonexistent/x.img")
    assert "no template at `/nonexistent/t.img`" in r.message("missing template")
    assert "unknown key `fmt`" in r.message("unknown key")

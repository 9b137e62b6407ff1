"""What a test opens is closed when it ends (streams, processes, files, workers,
VMs, in that order); what the file opens lives until the file ends; every
booted VM gets exactly one vm_spawned and one vm_shutdown."""

from collections import Counter

from test_lua_support import run_lua


def source(d):
    return f'''
local d = "{d}"
local filevm = provium:vm("filevm", "linux"):boot()
local never = provium:vm("never", "linux")
vm_in_file_stream = filevm:tail_file(d .. "/log", {{start = "beginning"}})
test("open things", function(t)
  local v = provium:vm("scoped", "linux"):boot()
  local v2 = provium:vm("explicit", "linux"):boot()
  v2:shutdown()
  v2:close()
  kept = {{
    vm = v,
    stream = v:tail_file(d .. "/log"),
    proc = v:run_async("exec sleep 60"),
    file = v:open_file(d .. "/log", {{read = true}}),
    worker = v:spawn_worker(),
  }}
end)
test("all closed", function(t)
  t:assert_eq(kept.vm:state(), "shutdown")
  t:assert(kept.stream:eof())
  t:assert_eq(kept.file:fd(), 0)
  t:assert_eq(provium.scoped, nil)
  local again = provium:vm("scoped", "linux")   -- the name can be used again
  t:assert_eq(again:state(), "created")
  local ok, err = pcall(function() return kept.worker:run("true") end)
  t:assert(not ok)
end)
test("file scope survives", function(t)
  t:assert_eq(filevm:state(), "booted")
  t:assert(not vm_in_file_stream:eof())
  filevm:run("echo more >> " .. d .. "/log")
  t:assert_eq(vm_in_file_stream:read_until("more", 5), "first\\nmore")
end)
test("same vm next test", function(t)
  t:assert_eq(filevm:run("echo still here").stdout, "still here\\n")
end)
'''


def test_scope_cleanup_and_vm_events(tmp_path):
    (tmp_path / "log").write_text("first\n")
    r = run_lua(tmp_path, source(tmp_path))
    r.assert_all_passed()
    spawned = Counter(e.vm_name for e in r.kinds("vm_spawned"))
    down = Counter(e.vm_name for e in r.kinds("vm_shutdown"))
    assert spawned == Counter({"filevm": 1, "scoped": 1, "explicit": 1})
    assert down == spawned  # exactly one each, none for the never-booted VM
    files = {e.vm_name: e.file for e in r.kinds("vm_spawned")}
    assert set(files.values()) == {r.path}  # `file` is the test file, whichever lab owns the VM
    # the test-scope VM goes down before the next test starts, the file's VM at the end
    order = [(e.KIND, getattr(e, "name", None) or getattr(e, "vm_name", None)) for e in r.events]
    assert order.index(("vm_shutdown", "scoped")) < order.index(("test_started", "all closed"))
    assert order[-1] == ("vm_shutdown", "filevm")


def test_close_order(tmp_path):
    from provium.lua.state import Scope

    closed = []

    class R:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise RuntimeError(f"{self.name} would not close")

    s = Scope("t")
    for kind, name in [("vm", "vm1"), ("file", "f1"), ("stream", "s1"), ("worker", "w1"),
                       ("proc", "p1"), ("stream", "s2"), ("vm", "vm2")]:
        s.add(kind, R(name, fail=(name == "f1")))
    errors = s.close_all()
    assert closed == ["s1", "s2", "p1", "f1", "w1", "vm1", "vm2"]
    assert errors == ["closing file: f1 would not close"]
    assert s.close_all() == [] and closed[-1] == "vm2"

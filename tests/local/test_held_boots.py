"""A file's top-level boots are held until a test will run (lua/deferboot.py): a
file whose tests are all filtered out boots nothing, and everything the top level
does with its VMs behaves as when boots were immediate."""

from __future__ import annotations

from test_lua_support import line_of, run_lua

SOURCE = '''
local web = provium:vm("web", "linux"):boot()
local dc = provium:lab("dc")
dc:vm("db", "linux")
dc:boot()
test("slow one", {tags = {"slow"}}, function(t) t:assert(web:state() == "booted") end)
test("db", {tags = {"db"}}, function(t) t:assert(provium.dc.db:state() == "booted") end)
'''


def test_a_file_whose_tests_are_all_filtered_out_boots_nothing(tmp_path):
    r = run_lua(tmp_path, SOURCE, tags=["none-of-these"])
    assert r.outcome.chunk_error is None
    assert [t.status for t in r.outcome.tests] == ["skipped", "skipped"]
    assert r.kinds("vm_spawned", "vm_shutdown") == []
    r = run_lua(tmp_path, 'local vm = provium:vm("a", "linux"):boot()\ntodo("later")\n'
                          'test("x", function(t) end)')
    assert r.kinds("vm_spawned") == [] and r.status("x") == "skipped"
    r = run_lua(tmp_path, 'provium:vm("a", "linux"):boot()\ntest("x", {skip = "no"}, function(t) end)')
    assert r.kinds("vm_spawned") == []


def test_held_boots_happen_when_one_test_is_selected(tmp_path):
    r = run_lua(tmp_path, SOURCE, tags=["db"])
    assert [t.status for t in r.outcome.tests] == ["skipped", "passed"], r.outcome.tests
    # all of the file's top-level VMs boot, in the order the top level asked
    assert [e.vm_name for e in r.kinds("vm_spawned")] == ["web", "db"]
    assert r.kinds("vm_spawned")[0].file == r.path


def test_the_top_level_sees_its_vms_booted_when_it_uses_them(tmp_path):
    r = run_lua(tmp_path, '''
        local vm = provium:vm("a", "linux"):boot()
        local seen = vm:state()
        local out = vm:run("echo hi").stdout
        test("x", function(t) t:assert(seen == "booted", seen); t:assert(out == "hi\\n", out) end)
    ''')
    r.assert_all_passed()


def test_a_held_boot_that_fails_is_reported_at_its_line(tmp_path):
    source = '''
        local vm = provium:vm("a", "linux")
        vm:boot({files = {{path = "/x", content = "y"}}})
        test("x", function(t) end)
    '''
    r = run_lua(tmp_path, source)
    # refused at once: the options are checked when the boot is asked for
    assert r.outcome.chunk_error.startswith(f"{r.path}:{line_of(source, 'vm:boot(')}: "), r.outcome.chunk_error
    source = '''
        local vm = provium:vm("a", "linux"):boot()
        local other = 1
        vm:boot()
        test("x", function(t) end)
    '''
    r = run_lua(tmp_path, source)
    err = r.outcome.chunk_error
    assert err.startswith(f"{r.path}:{line_of(source, 'vm:boot()')}: "), err
    assert "booted" in err and r.kinds("vm_spawned")[0].vm_name == "a"


def test_a_boot_failing_when_released_names_the_line_that_asked(tmp_path):
    # (the local backend refuses `files` when it launches, not when the boot is asked for)
    source = '''
        local vm = provium:vm("a", "linux", {files = {{path = "/x", content = "y"}}})
        vm:boot()
        test("x", function(t) end)
    '''
    r = run_lua(tmp_path, source)
    err = r.outcome.chunk_error or ""
    assert err.startswith(f"{r.path}:{line_of(source, 'vm:boot()')}: "), err
    assert "files" in err
    # and when something else at the top level needs the VM first: still the boot's line
    source = '''
        provium:vm("a", "linux", {files = {{path = "/x", content = "y"}}})
        provium:boot()
        local n = provium.a:state()
        test("x", function(t) end)
    '''
    r = run_lua(tmp_path, source)
    err = r.outcome.chunk_error or ""
    assert err.startswith(f"{r.path}:{line_of(source, 'provium:boot()')}: "), err

"""Per-test timeouts: meta.timeout > provium.timeout > the run default, and the
watchdog stops pure-Lua loops and blocked host calls alike."""

import time

from test_lua_support import run_lua


def test_busy_loops_are_stopped(tmp_path):
    t0 = time.monotonic()
    r = run_lua(tmp_path, '''
        test("busy", {timeout = "200ms"}, function(t) while true do end end)
        test("pcall loop", {timeout = 0.2}, function(t)
          while true do pcall(function() for i = 1, 1e5 do end end) end
        end)
        test("coroutine", {timeout = "200ms"}, function(t)
          coroutine.wrap(function() while true do end end)()
        end)
        test("wait_until", {timeout = "200ms"}, function(t)
          wait_until(function() return false end, {timeout = 60, interval = 0.05})
        end)
        test("still runs", function(t) t:log("alive") end)
    ''')
    assert time.monotonic() - t0 < 10
    for name in ("busy", "pcall loop", "coroutine", "wait_until"):
        assert r.status(name) == "timed_out", (name, r.message(name))
        assert r.message(name) == "test timeout exceeded (200ms)"
    assert r.status("still runs") == "passed" and r.test("still runs").log == ["alive"]
    ev = next(e for e in r.kinds("test_failed") if e.name == "busy")
    assert ev.reason == "test timeout exceeded (200ms)"


def test_blocked_host_call_is_interrupted_and_vms_torn_down(tmp_path):
    t0 = time.monotonic()
    r = run_lua(tmp_path, '''
        local vm = provium:vm("a", "linux"):boot()
        test("blocked", {timeout = "400ms"}, function(t) vm:run("sleep 30") end)
        test("after", function(t) t:assert_eq(vm:state(), "shutdown") end)
    ''')
    assert time.monotonic() - t0 < 15
    assert r.status("blocked") == "timed_out"
    assert r.message("blocked").startswith("test timeout exceeded (400ms)")
    assert r.status("after") == "passed"
    assert [e.vm_name for e in r.kinds("vm_shutdown")] == ["a"]


def test_timeout_precedence(tmp_path):
    r = run_lua(tmp_path, '''
        provium.timeout = "300ms"
        test("file default", function(t) while true do end end)
        test("meta wins", {timeout = 0.1}, function(t) while true do end end)
        test("fast", function(t) end)
    ''', test_timeout=60)
    assert r.message("file default") == "test timeout exceeded (300ms)"
    assert r.message("meta wins") == "test timeout exceeded (100ms)"
    assert r.status("fast") == "passed"
    r = run_lua(tmp_path, 'test("run default", function(t) while true do end end)', test_timeout=0.15)
    assert r.message("run default") == "test timeout exceeded (150ms)"


def test_bad_timeouts_are_clear_errors(tmp_path):
    r = run_lua(tmp_path, 'test("ok", function(t) end)\ntest("bad", {timeout = "5fortnights"}, function(t) end)')
    assert r.status("bad") == "failed"
    # at the test's declaration, as Lua reports its own errors (file:line:)
    assert r.message("bad").startswith(f"{r.path}:2: meta.timeout: cannot parse `5fortnights`"), r.message("bad")
    r = run_lua(tmp_path, 'provium.timeout = -1\ntest("x", function(t) end)')
    assert "provium.timeout" in r.outcome.chunk_error and "non-negative" in r.outcome.chunk_error
    r = run_lua(tmp_path, 'provium.timeout = 0\ntest("x", function(t) end)')
    assert "provium.timeout must be a positive duration" in r.outcome.chunk_error


def test_file_timeout_stops_the_file(tmp_path):
    r = run_lua(tmp_path, '''
        test("one", function(t) while true do end end)
        test("two", function(t) end)
    ''', file_timeout=0.3)
    assert r.outcome.timed_out
    assert r.status("one") == "timed_out" and r.message("one") == "file timeout exceeded (300ms)"
    assert [t.name for t in r.outcome.tests] == ["one", "two"]  # the rest are listed, as not run
    assert r.status("two") == "skipped" and r.message("two") == "not run: file timeout exceeded (300ms)"


def test_stuck_top_level_is_a_timed_out_chunk_error(tmp_path):
    r = run_lua(tmp_path, "while true do end\n", file_timeout=0.3)
    assert r.outcome.chunk_error == "file timeout exceeded (300ms)"
    assert r.outcome.timed_out and r.outcome.tests == []


def test_a_vm_shut_down_by_a_timeout_says_why_and_what_to_do(tmp_path):
    r = run_lua(tmp_path, '''
        local vm = provium:vm("a", "linux"):boot()
        test("slow one", {timeout = "300ms"}, function(t) vm:run("sleep 30") end)
        test("next", function(t) vm:run("true") end)
        test("reboot", function(t) vm:boot() end)
    ''')
    msg = r.message("next")
    assert msg.startswith("vm `a`: VM is shutdown; create a new one (cannot run)") or \
        "vm `a`: VM is shutdown; create a new one (cannot run)" in msg
    assert 'test "slow one" timed out (test timeout exceeded (300ms))' in msg
    assert "provium.reset_between_tests = true" in msg and "inside each test" in msg
    assert 'test "slow one" timed out' in r.message("reboot")


def test_per_test_cost_does_not_grow_with_the_files_heap(tmp_path):
    """A full Lua collection after every test made a file's cost quadratic in its
    size: each one walks everything the file holds.  With a big heap, 300 trivial
    tests took 1.8 s instead of 0.1 s; now the heap costs what building it costs."""
    import time

    def elapsed(heap: int) -> float:
        src = f"local keep = {{}}\nfor i = 1, {heap} do keep[i] = {{i}} end\n"
        src += "".join(f'test("t{i}", function(t) end)\n' for i in range(300))
        t0 = time.monotonic()
        run_lua(tmp_path, src).assert_all_passed()
        return time.monotonic() - t0

    small, big = elapsed(10), elapsed(300_000)
    assert big - small < 1.0, (small, big)


def test_a_test_blocked_in_a_host_command_is_stopped_and_the_command_killed(tmp_path):
    marker = tmp_path / "sleep-marker"
    t0 = time.monotonic()
    r = run_lua(tmp_path, f'''
        test("blocked in C", {{timeout = "300ms"}}, function(t) os.execute("exec sleep 30 # {marker}") end)
        test("later", function(t) end)
    ''')
    assert time.monotonic() - t0 < 10
    assert r.status("blocked in C") == "timed_out" and r.message("blocked in C") == "test timeout exceeded (300ms)"
    assert r.status("later") == "passed"
    import psutil
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(marker) in " ".join(p.info["cmdline"] or [])]


def test_debug_sethook_is_refused(tmp_path):
    r = run_lua(tmp_path, '''
        test("hook", function(t) debug.sethook(function() end, "", 1) end)
        test("still stoppable", {timeout = "200ms"}, function(t) while true do end end)
    ''')
    assert r.status("hook") == "failed"
    assert "debug.sethook is not available in a provium test" in r.message("hook")
    assert r.status("still stoppable") == "timed_out"

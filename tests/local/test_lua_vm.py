"""The VM from Lua on the local backend: state machine, run forms, results,
files, streams, processes, workers, clock, syscalls, batch — and the errors
for wrong arguments."""

from test_lua_support import line_of, no_traceback, run_lua

STATES = '''
local vm = provium:vm("db", "linux")
test("created", function(t)
  t:assert_eq(vm:state(), "created")
  t:assert_eq(vm:cid(), nil)
  t:assert_eq(vm:name(), "db")
  t:assert_eq(vm:profile(), "linux")
  t:assert_eq(tostring(vm), "vm(db state=created cid=-)")
end)
test("run before boot", function(t) vm:run("true") end)
test("boot returns self", function(t)
  t:assert_eq(vm:boot(), vm)
  t:assert_eq(vm:state(), "booted")
  t:assert(vm:cid() > 0)
  t:assert_contains(tostring(vm), "state=booted")
end)
test("double boot", function(t) vm:boot() end)
test("shutdown", function(t)
  vm:shutdown()
  vm:shutdown()           -- idempotent
  t:assert_eq(vm:state(), "shutdown")
end)
test("run after shutdown", function(t) vm:run("true") end)
test("boot after shutdown", function(t) vm:boot() end)
'''


def test_state_machine(tmp_path):
    r = run_lua(tmp_path, STATES)
    for name in ("created", "boot returns self", "shutdown"):
        assert r.status(name) == "passed", (name, r.message(name))
    assert r.message("run before boot") == f"{r.path}:{line_of(STATES, 'run before boot')}: vm `db`: VM not booted (cannot run)"
    assert "VM already booted" in r.message("double boot")
    assert "VM is shutdown; create a new one (cannot run)" in r.message("run after shutdown")
    assert "create a new one" in r.message("boot after shutdown")
    assert [e.KIND for e in r.events if e.KIND.startswith("vm_")] == ["vm_spawned", "vm_shutdown"]
    assert {e.file for e in r.events if e.KIND.startswith("vm_")} == {r.path}  # the file, not the lab name


def run_forms(d):
    return f'''
local vm = provium:vm("a", "linux"):boot()
local dir = "{d}"
test("shell form pipes", function(t)
  local r = vm:run("echo a b c | wc -c")
  t:assert_eq(r.stdout, "6\\n")
  t:assert_eq(r.exit_code, 0)
  t:assert_eq(r.status, "exited")
  t:assert(r:ok())
  t:assert_eq(r.timed_out, false)
  t:assert_eq(r.signal, nil)
  t:assert_eq(r.stderr, "")
  t:assert_eq(tostring(r), "RunResult{{ status=exited, stdout=2B, stderr=0B }}")
  r:assert_ok()
end)
test("direct exec skips the shell", function(t)
  t:assert_eq(vm:run("echo", {{"a  b", "$HOME"}}).stdout, "a  b $HOME\\n")
  t:assert_eq(vm:run("true", {{}}).exit_code, 0)
end)
test("opts", function(t)
  t:assert_eq(vm:run("printenv", {{args = {{"FOO"}}, env = {{FOO = "bar"}}}}).stdout, "bar\\n")
  t:assert_eq(vm:run("printenv FOO", {{env = {{FOO = "sh"}}}}).stdout, "sh\\n")
  t:assert_eq(vm:run("pwd", {{cwd = dir}}).stdout, dir .. "\\n")
  t:assert_eq(vm:run("cat", {{stdin = "in\\0put"}}).stdout, "in\\0put")
  local r = vm:run("sleep 10", {{timeout_ms = 100}})
  t:assert_eq(r.status, "timed_out"); t:assert_eq(r.exit_code, -2); t:assert(r.timed_out)
  t:assert_eq(vm:run("sleep 10", {{timeout = "100ms"}}).status, "timed_out")
end)
test("exit codes", function(t)
  local r = vm:run("echo oops >&2; exit 3")
  t:assert_eq(r.exit_code, 3)
  t:assert(not r:ok())
  r:assert_ok()
end)
test("missing binary", function(t) vm:run("/nonexistent/binary", {{}}) end)
test("non-string command", function(t) vm:run(42) end)
test("no command", function(t) vm:run() end)
test("bad second arg", function(t) vm:run("true", 5) end)
test("unknown opt", function(t) vm:run("true", {{bogus = 1}}) end)
test("mixed table", function(t) vm:run("echo", {{"x", env = {{}}}}) end)
test("bad arg entry", function(t) vm:run("echo", {{1, 2}}) end)
test("run_async timeout", function(t) vm:run_async("sleep 1", {{timeout = "1s"}}) end)
test("result is read-only", function(t) local r = vm:run("true"); r.exit_code = 5 end)
test("result unknown field", function(t) local r = vm:run("true"); local x = r.exitcode end)
test("unknown method", function(t) vm:frobnicate() end)
test("dot call", function(t) vm.run("true") end)
'''


def test_run_forms_and_results(tmp_path):
    r = run_lua(tmp_path, run_forms(tmp_path))
    for name in ("shell form pipes", "direct exec skips the shell", "opts"):
        assert r.status(name) == "passed", (name, r.message(name))
    m = r.message("exit codes")
    assert "command failed: status=exited code=3" in m and 'stderr="oops\\n"' in m
    assert "No such file" in r.message("missing binary")
    assert r.message("non-string command").endswith("vm:run: first argument must be a string, got number")
    assert r.message("no command").endswith("vm:run expects at least a command string")
    assert r.message("bad second arg").endswith("vm:run: second argument must be a table, got number")
    assert "vm:run: unknown option `bogus` (valid: args, stdin, env, env_clear, cwd, timeout, timeout_ms)" \
        in r.message("unknown opt")
    assert "either as a plain array or as `args=`" in r.message("mixed table")
    assert "argument array entry [1] must be a string, got number" in r.message("bad arg entry")
    assert "`timeout` is not honoured here; pass it to `proc:wait(timeout)` instead" in r.message("run_async timeout")
    assert "RunResult: fields are read-only (cannot set `exit_code`)" in r.message("result is read-only")
    assert "RunResult: no field or method `exitcode` (fields: exit_code, stdout" in r.message("result unknown field")
    m = r.message("unknown method")
    assert "vm: no method or field `frobnicate` (methods: " in m and "run_async" in m
    assert "vm:run: call it with a colon" in r.message("dot call")
    for t in r.outcome.tests:
        assert no_traceback(t.message), t.message
        if t.status == "failed":
            assert t.message.startswith(r.path + ":"), t.message


def files_source(d):
    return f'''
local vm = provium:vm("f", "linux"):boot()
local d = "{d}"
test("whole files", function(t)
  vm:write_file(d .. "/bin", "a\\0b\\255")
  t:assert_eq(vm:read_file(d .. "/bin"), "a\\0b\\255")
  local st = vm:stat(d .. "/bin")
  t:assert_eq(st.size, 4); t:assert_eq(st.entry_type, "file")
  t:assert(st.mtime > 1e9 and st.mtime < 1e15); t:assert_eq(math.type(st.mtime_ns), "integer")
  t:assert(st.perm <= 4095)
  vm:mkdir(d .. "/sub/deeper", {{parents = true}})
  t:assert_eq(vm:stat(d .. "/sub").entry_type, "directory")
  vm:rename(d .. "/bin", d .. "/sub/moved")
  local names = {{}}
  for _, e in ipairs(vm:listdir(d .. "/sub")) do names[#names + 1] = e.name .. ":" .. e.entry_type end
  table.sort(names)
  t:assert_eq(table.concat(names, ","), "deeper:directory,moved:file")
  vm:unlink(d .. "/sub/moved")
  t:assert_eq(#vm:listdir(d .. "/sub"), 1)
end)
test("missing file", function(t) vm:read_file(d .. "/nope") end)
test("path type", function(t) vm:read_file(42) end)
test("data type", function(t) vm:write_file(d .. "/x", {{}}) end)
test("mkdir opt", function(t) vm:mkdir(d .. "/y", {{parent = true}}) end)
test("handles", function(t)
  local f = vm:open_file(d .. "/h", {{write = true, create = true, read = true}})
  t:assert_eq(f:write("hello world"), 11)
  t:assert_eq(f:seek(6), 6)
  t:assert_eq(f:read(5), "world")
  t:assert_eq(f:read(5), "")
  t:assert_eq(f:tell(), 11)
  f:seek(0, "set")
  t:assert_eq(f:read_all(), "hello world")
  t:assert_eq(math.type(f:fd()), "integer")
  t:assert_eq(vm:open_file_count(), 1)
  f:close(); f:close()
  t:assert_eq(vm:open_file_count(), 0)
  t:assert_eq(f:fd(), 0)
  t:assert_eq(tostring(f), "file(closed)")
  local ok, err = pcall(f.read, f, 1)
  t:assert(not ok); t:assert_contains(err, "file is closed")
end)
test("no mode", function(t) vm:open_file(d .. "/h", {{}}) end)
test("create only", function(t) vm:open_file(d .. "/h", {{create = true}}) end)
test("bad whence", function(t)
  local f = vm:open_file(d .. "/h", {{read = true}})
  f:seek(0, "middle")
end)
test("tail", function(t)
  vm:write_file(d .. "/log", "old\\n")
  local s = vm:tail_file(d .. "/log")
  local b = vm:tail_file(d .. "/log", {{start = "beginning"}})
  t:assert_eq(vm:open_stream_count(), 2)
  t:assert(not vm:is_quiescent())
  vm:run("echo new >> " .. d .. "/log")
  t:assert_eq(s:read_until("new\\n", 5), "new\\n")
  b:expect("old", 5)
  t:assert_eq(b:read_until("new", 5), "\\nnew")
  local site = s:creation_site()
  t:assert_contains(site.file, "x.test.lua"); t:assert(site.line > 0)
  s:close()
  t:assert(s:eof())
  t:assert_eq(s:next(), nil)
  t:assert_eq(type(s:drain(0.01)), "table")
end)
test("tail bad start", function(t) vm:tail_file(d .. "/log", {{start = "middle"}}) end)
test("tail bad path", function(t) vm:tail_file(5) end)
'''


def test_files_and_streams(tmp_path):
    r = run_lua(tmp_path, files_source(tmp_path))
    for name in ("whole files", "handles", "tail"):
        assert r.status(name) == "passed", (name, r.message(name))
    assert "os: " in r.message("missing file") and "No such file" in r.message("missing file")
    assert r.message("path type").endswith("vm:read_file: argument #1 (path) must be a string, got number")
    assert r.message("data type").endswith("vm:write_file: argument #2 (data) must be a string, got table")
    assert "vm:mkdir: unknown option `parent` (valid: parents, perm)" in r.message("mkdir opt")
    for name in ("no mode", "create only"):
        assert "must specify at least one of `read`, `write`, `append`" in r.message(name)
    assert "whence must be set/cur/end, got `middle`" in r.message("bad whence")
    assert 'opts.start = `middle` (expected "beginning"|"end"|number)' in r.message("tail bad start")
    assert "vm:tail_file: first arg must be a path string, got number" in r.message("tail bad path")


def procs_source():
    return '''
local vm = provium:vm("p", "linux"):boot()
test("async", function(t)
  local p = vm:run_async("printf hi; exit 4")
  t:assert(p:handle() > 0)
  t:assert_contains(tostring(p), "process(proc#")
  local r = p:wait("5s")
  t:assert_eq(r.stdout, "hi"); t:assert_eq(r.exit_code, 4)
  local ok, err = pcall(p.wait, p)
  t:assert(not ok); t:assert_contains(err, "one-shot")
end)
test("wait timeout", function(t)
  local p = vm:run_async("exec sleep 60")
  t:assert(p:pid() > 0)
  t:assert_eq(p:status(), "running")
  t:assert_eq(p:wait("100ms").status, "timed_out")
end)
test("kill by name", function(t)
  local p = vm:run_async("exec sleep 60")
  p:kill("kill")
  local r = p:wait("5s")
  t:assert_eq(r.status, "signalled"); t:assert_eq(r.signal, 9); t:assert_eq(r.exit_code, -1)
end)
test("stdin", function(t)
  local p = vm:run_async("cat")
  t:assert_eq(p:stdin_write("ping"), 4)
  p:close_stdin()
  t:assert_eq(p:wait("5s").stdout, "ping")
end)
test("wait zero", function(t) vm:run_async("true"):wait(0) end)
test("bad duration", function(t) vm:run_async("true"):wait("5fortnights") end)
test("float signal", function(t) vm:run_async("exec sleep 5"):kill(1.5) end)
test("bad signal", function(t) vm:run_async("exec sleep 5"):kill("nope") end)
test("durations", function(t)
  local c = vm:clock()
  c:sleep("10ms"); c:sleep("0s"); c:sleep(0); c:sleep(0.001); c:sleep("1ms"); c:sleep()
  t:assert_eq(math.type(c:get_ns()), "integer")
  t:assert(c:get() > 1.6e9)
end)
test("bad clock duration", function(t) vm:clock():sleep("5fortnights") end)
test("clock set nan", function(t) vm:clock():set(0/0) end)
test("clock advance type", function(t) vm:clock():advance({}) end)
test("workers", function(t)
  local w = vm:spawn_worker()
  t:assert(w:handle() > 0)
  local r = w:run("echo from worker")
  t:assert_eq(r.stdout, "from worker\\n")
  local mine = vm:syscall(39).ret
  local theirs = w:syscall(39)
  t:assert(theirs.ret > 0); t:assert_eq(theirs.errno, 0); t:assert(theirs.ret ~= mine)
  t:assert_eq(theirs.result, theirs.ret)
  t:assert_eq(math.type(w:join()), "integer")
  w:close()
end)
test("thread worker", function(t) vm:spawn_worker({thread = true}) end)
test("worker opt", function(t) vm:spawn_worker({uidd = 0}) end)
test("syscalls", function(t)
  local r = vm:syscall(39)
  t:assert(r.ret > 0); t:assert_eq(r.errno, 0); t:assert_eq(r.result, r.ret)
  t:assert_eq(type(r.out_bufs), "table")
  local bad = vm:syscall(99999)
  t:assert(bad.ret < 0); t:assert_eq(bad.errno, 38)
end)
test("syscall nr", function(t) vm:syscall("x") end)
test("batch", function(t)
  local res = vm:batch(function(b)
    b:run("echo hi")
    b:stat("/")
    b:read_file("/nonexistent/file")
  end)
  t:assert_eq(#res, 3)
  t:assert_eq(res[1].ok.stdout, "hi\\n")
  t:assert_eq(res[2].ok.entry_type, "directory")
  t:assert(res[3].err ~= nil)
  t:assert_eq(#vm:batch(function(b) end), 0)
end)
test("batch error", function(t) vm:batch(function(b) error("builder broke") end) end)
test("batch kept", function(t)
  local kept
  vm:batch(function(b) kept = b; b:run("true") end)
  kept:run("echo lost")
end)
'''


def test_processes_workers_clock_syscalls(tmp_path):
    r = run_lua(tmp_path, procs_source())
    for name in ("async", "wait timeout", "kill by name", "stdin", "durations", "workers", "syscalls", "batch"):
        assert r.status(name) == "passed", (name, r.message(name))
    assert "timeout=0 would SIGKILL the process immediately" in r.message("wait zero")
    assert "cannot parse `5fortnights`" in r.message("bad duration")
    assert "signal must be int or string, got number" in r.message("float signal")
    assert "unknown signal name `nope`" in r.message("bad signal")
    assert "cannot parse `5fortnights`" in r.message("bad clock duration")
    assert "finite" in r.message("clock set nan")
    assert "clock:advance: expected number|string, got table" in r.message("clock advance type")
    assert "`thread=true` is not yet supported" in r.message("thread worker")
    assert "vm:spawn_worker: unknown option `uidd` (valid: uid, gid, groups, thread)" in r.message("worker opt")
    assert "nr" in r.message("syscall nr")
    line = next(i for i, s in enumerate(procs_source().splitlines(), 1) if "builder broke" in s)
    assert r.message("batch error") == f"{r.path}:{line}: builder broke"
    assert "batch:run: this batch was already sent (vm:batch has returned)" in r.message("batch kept")
    for t in r.outcome.tests:
        assert no_traceback(t.message), t.message


OVERFLOW = '''
local vm = provium:vm("big", "linux"):boot()
test("run timeout 1e300", function(t) vm:run("true", {timeout = 1e300}) end)
test("run timeout_ms huge", function(t) vm:run("true", {timeout_ms = math.maxinteger}) end)
test("wait 1e300", function(t)
  local p = vm:run_async("true")
  local ok, err = pcall(p.wait, p, 1e300)
  p:wait()
  error(err, 0)
end)
test("clock sleep 1e300", function(t) vm:clock():sleep(1e300) end)
test("run timeout string", function(t) t:assert_eq(vm:run("true", {timeout = "5"}).exit_code, 0) end)
'''


def test_durations_that_would_overflow_are_refused_naming_the_argument(tmp_path):
    r = run_lua(tmp_path, OVERFLOW)
    too_long = "seconds is too long (at most 1e+09 s, about 31 years; for no limit leave it out)"
    assert r.message("run timeout 1e300") == (f"{r.path}:{line_of(OVERFLOW, 'run timeout 1e300')}: "
                                              f"vm:run timeout: 1e+300 {too_long}")
    assert r.message("run timeout_ms huge").endswith("vm:run: `timeout_ms` 9223372036854775807 is too long (at most "
                                                     "1e+12 ms, about 31 years; for no limit leave it out)")
    assert r.message("wait 1e300") == f"proc:wait timeout: 1e+300 {too_long}"
    assert r.message("clock sleep 1e300").endswith(f"clock:sleep duration: 1e+300 {too_long}")
    assert r.status("run timeout string") == "passed", r.message("run timeout string")

-- 03: background processes and streams.
--
-- vm:run() waits for the command; vm:run_async() starts it and hands back a
-- process you can feed, watch and stop.  Output arrives as a stream: `expect`
-- waits (10 s by default) until a pattern shows up.

local vm = provium:vm("procs", "linux")
vm:boot()

test("watch a process's output as it happens", function(t)
  local p = vm:run_async("for i in 1 2 3; do echo tick $i; sleep 0.2; done")
  local out = p:stdout_stream()
  out:expect("tick 1")
  out:expect("tick 3")
  t:assert_eq(p:wait("10s").exit_code, 0)
end)

test("talk to a process through its stdin", function(t)
  local p = vm:run_async("cat")
  local out = p:stdout_stream()
  p:stdin_write("ping\n")
  out:expect("ping")
  p:close_stdin()                 -- cat sees end of input and exits
  t:assert_eq(p:wait("10s").exit_code, 0)
end)

test("stop a process that would run forever", function(t)
  local p = vm:run_async("sleep", { args = { "600" } })   -- no shell in between
  t:assert_eq(p:status(), "running")
  p:kill()                         -- SIGTERM by default; p:kill("kill") for SIGKILL
  local r = p:wait("10s")
  t:assert_eq(r.status, "signalled")
end)

test("follow a file while something writes to it", function(t)
  local made = vm:run("mktemp")
  made:assert_ok()
  local log = (made.stdout:gsub("%s+$", ""))
  local tail = vm:tail_file(log)
  vm:run_async("sleep 0.2; echo service started >> " .. log)
  tail:expect("service started")
  tail:close()
  vm:run("rm -f " .. log)
end)

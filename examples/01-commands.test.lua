-- 01: running commands in the guest.
--
-- A test file is plain Lua.  Code at the top level runs once, before any test:
-- here it creates one VM from the built-in `linux` profile and boots it.  Every
-- test() below then runs, in order, against that same guest.
--
--   provium examples/01-commands.test.lua          (real QEMU guest)
--   provium --vmm local examples/                  (no VM: commands run on this host)

local vm = provium:vm("demo", "linux")
vm:boot()

test("a command's exit code and output", function(t)
  local r = vm:run("echo hello from the guest")
  r:assert_ok()                               -- raises unless it exited with 0
  t:assert_eq(r.stdout, "hello from the guest\n")
  t:assert_eq(r.exit_code, 0)
end)

test("a failing command is a result, not an error", function(t)
  local r = vm:run("echo oops >&2; exit 3")
  t:assert_eq(r.exit_code, 3)
  t:assert_eq(r.stderr, "oops\n")
  t:assert(not r:ok(), "exit 3 is not ok")
end)

test("arguments, environment and stdin", function(t)
  -- With `args` the program runs directly, without a shell in between.
  local r = vm:run("sh", { args = { "-c", "echo \"$GREETING, $1\"", "sh", "world" },
                           env = { GREETING = "hello" } })
  t:assert_eq(r.stdout, "hello, world\n")

  local sorted = vm:run("sort", { args = {}, stdin = "pear\napple\nfig\n" })
  t:assert_eq(sorted.stdout, "apple\nfig\npear\n")
end)

test("a command that takes too long is stopped", function(t)
  local r = vm:run("sleep 30", { timeout = "300ms" })
  t:assert(r.timed_out, "the timeout should have fired")
  t:assert_eq(r.status, "timed_out")
  t:log("timed out as expected: " .. tostring(r))  -- t:log lines show up in -v and --json output
end)

-- 04: metadata, tags and choosing what runs.
--
-- test(name, meta, fn) takes an optional table of metadata.  A few keys mean
-- something to the runner; all of them travel with the test's events.
--
--   tags = {...}   pick tests:  provium --tag smoke examples/
--                  leave out:   provium --no-tag net examples/
--   spec = "..."   which requirement the test checks; `provium --coverage`
--                  reports by it
--   skip = "why"   never run it, show it as skipped with the reason
--   slow = true    only run with --include-slow
--   any other key  filter with --tag-meta KEY=VALUE / --no-tag-meta KEY=VALUE

local vm = provium:vm("meta", "linux")
vm:boot()

test("the guest has a hostname", { tags = { "smoke" }, spec = "demo-1" }, function(t)
  local r = vm:run("hostname")
  r:assert_ok()
  t:assert(#r.stdout > 0, "hostname printed nothing")
end)

test("the loopback interface exists", { tags = { "smoke", "net" }, spec = "demo-2", area = "network" }, function(t)
  local r = vm:run("cat /proc/net/dev")
  r:assert_ok()
  t:assert_contains(r.stdout, "lo:")
end)

test("not ready yet", { skip = "waiting for a feature; shows how a skip looks" }, function(t)
  t:fail("never runs")
end)

-- This test FAILS ON PURPOSE, so you can see what a failure looks like: the
-- file's FAIL line, the test name, the message and the summary.  It is marked
-- slow, and slow tests are skipped unless you ask for them:
--
--   provium --include-slow examples/04-tags.test.lua
--
-- (`make demo` leaves it out, so the demo run is green.)
test("fails on purpose", { slow = true, spec = "demo-3" }, function(t)
  local name = (vm:run("uname -s").stdout:gsub("%s+$", ""))
  t:log("uname said: " .. name)
  t:assert_eq(name, "Plan 9", "this guest is not Plan 9")
end)

"""Bridges and NICs from Lua on the local backend: the graph and its bookkeeping
(what the reference's own conformance tests pin), naming rules and bad input.
Packets need real guests: tests/qemu/test_net.py."""

from test_lua_support import no_traceback, run_lua

GRAPH = '''
local a = provium:vm("a", "linux")
local b = provium:vm("b", "linux")
local lan = provium:bridge("lan", {})

test("lookup and dot access", function(t)
  t:assert_eq(provium:bridge("lan"), lan)
  t:assert_eq(provium.lan, lan)
  t:assert_eq(lan:name(), "lan")
  t:assert_eq(table.concat(_G.root:bridge_names(), ","), "lan")
  local m = _G.root:members()
  t:assert_eq(m[3].kind, "bridge"); t:assert_eq(m[3].name, "lan")
end)

test("attach forms and members", function(t)
  lan:attach(b); lan:attach("c"); lan:attach({a, "d"}); lan:attach(a)
  t:assert_eq(table.concat(lan:members(), ","), "a,b,c,d")
  t:assert_eq(tostring(lan), "bridge(lan; 4 member(s))")
  local ok = pcall(function() lan:attach({"e", 42}) end)
  t:assert(not ok)
  t:assert_eq(table.concat(lan:members(), ","), "a,b,c,d")  -- a bad list attaches nothing
  lan:detach("d"); lan:detach(b)
  t:assert_eq(table.concat(lan:members(), ","), "a,c")
  lan:attach(b)
end)

test("partitions", function(t)
  lan:partition("x", "y")                       -- unattached names are fine (graph state)
  t:assert(lan:is_partitioned("y", "x"))
  lan:unpartition("y", "x")
  t:assert(not lan:is_partitioned("x", "y"))
  lan:partition(a, b)
  lan:partition({from = a, to = "c"})
  lan:partition_all()
  t:assert(lan:is_partitioned("c", "zz"))
  lan:restore_all()
  t:assert(lan:is_partitioned("a", "b"))        -- restore_all only undoes partition_all
  t:assert(not lan:is_partitioned("a", "c"))    -- directional is not reported here
  lan:isolate(a)
  t:assert(lan:is_isolated("a")); t:assert(not lan:is_partitioned("a", "c"))
  lan:reset()
  t:assert(not lan:is_partitioned("a", "b")); t:assert(lan:is_isolated(a))
  lan:unisolate("a")
  t:assert(not lan:is_isolated(a))
  lan:unpartition({from = "ghost", to = "a"})   -- undoing needs no attachment
end)

test("impairments and getters", function(t)
  lan:add_latency(25); lan:drop_rate(250); lan:bandwidth_limit(2000000)
  t:assert_eq(lan:latency_ms(), 25); t:assert_eq(lan:drop_rate_pct(), 100); t:assert_eq(lan:bandwidth_bps(), 2000000)
  lan:add_latency(30, 5)
  t:assert_eq(lan:latency_ms(), 30); t:assert_eq(lan:jitter_ms(), 5)
  lan:drop_rate(12.5)
  t:assert_eq(lan:drop_rate_pct(), 12.5)
  lan:add_latency({from = a, to = b, ms = 10})
  lan:add_directional_latency({from = "b", to = "a", ms = 3})
  lan:drop_rate({from = "a", to = "b", p = 20})
  lan:directional_drop_rate({from = "b", to = "a", p = 200})
  lan:bandwidth_limit({from = "a", to = "b", bps = 100000})
  lan:reset()
  t:assert_eq(lan:latency_ms(), 0); t:assert_eq(lan:drop_rate_pct(), 0); t:assert_eq(lan:bandwidth_bps(), 0)
end)

test("routes", function(t)
  t:assert_eq(#lan:routes(), 0)
  local wan = provium:bridge("wan")
  lan:route("dmz"); lan:route(wan); lan:route({"x", wan})
  t:assert_eq(table.concat(lan:routes(), ","), "dmz,wan,x")
end)

test("nic", function(t)
  local n = lan:nic("a")
  t:assert_eq(n:vm_name(), "a"); t:assert_eq(n:bridge(), "lan")
  local c = n:counters()
  for _, k in ipairs({"rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "errors"}) do t:assert_eq(c[k], 0) end
  n:disconnect(); t:assert(not n:is_connected()); n:reconnect(); t:assert(n:is_connected())
  t:assert_eq(a:nic("lan"):vm_name(), "a")
  t:assert_eq(a:nic("eth0"):bridge(), "lan")
end)

test("capture on a quiet bridge", function(t)
  local cap = lan:capture()
  t:assert_eq(tostring(cap), "capture(lan)")
  local head = cap:next(1)
  t:assert_eq(#head, 24)                         -- the pcap global header, then nothing
  t:assert_eq(cap:next(0.05), nil)
  local ok, err = pcall(cap.read_until, cap, "never", 0.05)
  t:assert(not ok); t:assert_contains(err, "capture:read_until timed out waiting for never")
  cap:close()
  t:assert(cap:eof())
  ok, err = pcall(cap.expect, cap, "x", 0.05)
  t:assert(not ok); t:assert_contains(err, "capture closed")
end)

test("capture ends with its bridge", function(t)
  local e2 = provium:bridge("e2")
  local cap = e2:capture()
  e2:close()
  local ok, err = pcall(cap.read_until, cap, "x", 1)
  t:assert(not ok); t:assert_contains(err, "capture:read_until eof waiting for x")
end)

test("test-scope bridge", function(t)
  local tmp = provium:bridge("tmp")
  tmp:attach("q")
  _G.tmp = tmp
end)
test("test-scope bridge is gone", function(t) t:assert_eq(provium.tmp, nil) end)

test("self partition", function(t) lan:partition(a, "a") end)
test("negative latency", function(t) lan:add_latency(-5) end)
test("absurd latency", function(t) lan:add_latency(1e9) end)
test("nan drop", function(t) lan:drop_rate(0/0) end)
test("string rate", function(t) lan:drop_rate("lots") end)
test("bandwidth range", function(t) lan:bandwidth_limit(5) end)
test("jitter over latency", function(t) lan:add_latency(5, 10) end)
test("directional unknown", function(t) lan:partition({from = "a", to = "ghost"}) end)
test("directional missing key", function(t) lan:add_latency({from = "a", ms = 5}) end)
test("directional unknown key", function(t) lan:drop_rate({from = "a", to = "b", pct = 5}) end)
test("partition arity", function(t) lan:partition("a") end)
test("member type", function(t) lan:attach(42) end)
test("bad name", function(t) provium:bridge("no spaces") end)
test("long name", function(t) provium:bridge("abcdefghijklmnop") end)
test("reserved name", function(t) provium:bridge("unpack") end)
test("duplicate", function(t) _G.root:bridge("lan", {}) end)
test("unknown option", function(t) provium:bridge("o", {color = "red"}) end)
test("bad subnet", function(t) provium:bridge("s", {subnet = "8.8.8.0/24"}) end)
test("unknown nic", function(t) a:nic("eth5") end)
test("nic capture before boot", function(t) lan:nic("a"):capture() end)
test("uplink without subnet", function(t) lan:enable_uplink({ports = {8080}}) end)
test("uplink without ports", function(t) provium:bridge("u1", {addressing = true}):enable_uplink() end)
test("uplink bad port", function(t) provium:bridge("u2", {addressing = true}):enable_uplink({ports = {70000}}) end)
'''


def test_bridge_graph_on_local(tmp_path):
    r = run_lua(tmp_path, "root = provium\n" + GRAPH)
    assert r.outcome.chunk_error is None, r.outcome.chunk_error
    for name in ("lookup and dot access", "attach forms and members", "partitions", "impairments and getters",
                 "routes", "nic", "capture on a quiet bridge", "capture ends with its bridge", "test-scope bridge", "test-scope bridge is gone"):
        assert r.status(name) == "passed", (name, r.message(name))
    expect = {
        "self partition": "bridge:partition: cannot partition vm `a` from itself",
        "negative latency": "bridge:add_latency: expected a non-negative int or table, got -5",
        "absurd latency": "is absurd (at most 60000 ms)",
        "nan drop": "bridge:drop_rate: drop rate (percent) must be a finite number, got nan",
        "string rate": "bridge:drop_rate: expected int or table, got string",
        "bandwidth range": "bridge:bandwidth_limit: bandwidth 5 bit/s is out of range",
        "jitter over latency": "jitter 10 ms is larger than the latency 5 ms",
        "directional unknown": "bridge:partition: vm `ghost` is not attached to bridge `lan` (attached: [a, b, c]). "
                               'Call bridge:attach("ghost") first.',
        "directional missing key": "bridge:add_latency: directional form needs `to`",
        "directional unknown key": "bridge:drop_rate: unknown key `pct` in the table (valid: from, to, p)",
        "partition arity": "bridge:partition: expected (a, b) or ({from=a, to=b})",
        "member type": "bridge expected a VM userdata or string, got number",
        "bad name": "lab:bridge: bridge name `no spaces` is not valid",
        "long name": "bridge name `abcdefghijklmnop` is not valid",
        "reserved name": "name `unpack` is reserved",
        "duplicate": "bridge name `lan` already used in this lab",
        "unknown option": "lab:bridge: unknown option `color` (valid: subnet, addressing, seed)",
        "bad subnet": "must be a private IPv4 network",
        "unknown nic": "vm:nic: no NIC `eth5` on vm `a`",
        "nic capture before boot": "nic:capture: vm `a` has no NIC on bridge `lan` (not booted?)",
        "uplink without subnet": "bridge:enable_uplink: bridge `lan` has no subnet",
        "uplink without ports": "bridge:enable_uplink: needs `ports`",
        "uplink bad port": "bridge:enable_uplink: port must be a TCP port 1..65535, got 70000",
    }
    for name, text in expect.items():
        assert r.status(name) == "failed", name
        assert text in r.message(name), (name, r.message(name))
    for t in r.outcome.tests:
        assert no_traceback(t.message), t.message

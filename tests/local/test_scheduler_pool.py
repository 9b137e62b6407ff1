"""The pool, claims, VM charges, barriers and PSI gating, with real runners on the local backend.

Each test runs real `*.test.lua` files through the dispatcher (one runner process
per file) with a small pool of its own, and reads the order of things from the
event stream.  VM charges are switched on (as on QEMU) where a test needs them.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from provium.events import types as ev
from provium.events.sinks import CallbackSink
from provium.scheduler import discovery
from provium.scheduler.dispatch import Dispatcher, DispatchOptions
from provium.scheduler.pool import FILE_OVERHEAD, MIB, PoolSize

GIB = 1 << 30


def pool(memory: int, cpus: int, *, charge_vms: bool = True) -> PoolSize:
    return PoolSize(total=ev.ResourceAmount(memory, cpus), per_file=ev.ResourceAmount(FILE_OVERHEAD, 0),
                    charge_vms=charge_vms)


class Ran:
    def __init__(self, files, results, frames):
        self.files, self.results, self.frames = files, results, frames

    def result(self, name: str):
        return next(r for r in self.results if Path(r.path).name == name)

    def events(self, kind: str, name: str | None = None) -> list[ev.EventFrame]:
        return [f for f in self.frames if f.kind == kind
                and (name is None or Path(getattr(f.payload, "path", "")).name == name)]

    def ts(self, kind: str, name: str) -> int:
        (f,) = self.events(kind, name)
        return f.ts

    def assert_passed(self, name: str) -> None:
        r = self.result(name)
        assert r.passed, (r.chunk_error, [(t.name, t.status, t.message) for t in r.tests], r.output)


def dispatch(tmp_path: Path, sources: dict[str, str], p: PoolSize, *, psi_paths=(), timeout=60.0,
             settings: dict | None = None) -> Ran:
    root = tmp_path / "t"
    root.mkdir(exist_ok=True)
    files = []
    for name, src in sources.items():
        path = root / name
        path.write_text(textwrap.dedent(src))
        files.append(discovery.Discovered(path=str(path), root=str(root), rel=name))
    files.sort(key=lambda d: d.path)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    frames: list[ev.EventFrame] = []
    opts = DispatchOptions(settings_json=json.dumps({"vmm": "local", **(settings or {})}), work_dir=str(work),
                           pool=p, file_timeout=timeout, psi_paths=psi_paths)
    results = Dispatcher(CallbackSink(frames.append), opts).run(files)
    return Ran(files, results, frames)


HOLD = '''
provium:claim({memory = "%s", cpus = %d})
test("hold", function(t) _provium_sleep(%s) end)
'''


def test_a_file_claiming_more_than_the_pool_fails_at_dispatch(tmp_path):
    ran = dispatch(tmp_path, {"big.test.lua": HOLD % ("8G", 1, 0),
                              "ok.test.lua": 'test("t", function(t) end)'}, pool(2 * GIB, 2))
    big = ran.result("big.test.lua")
    assert not big.passed and big.status == "crashed"
    assert "claims 8 GiB / 1 cpu (provium:claim), which exceeds the pool total (2 GiB / 2 cpus)" in big.chunk_error
    assert not ran.events("file_dispatched", "big.test.lua")  # it never started
    ran.assert_passed("ok.test.lua")


def test_a_claim_the_scan_cannot_see_is_refused_at_run_time(tmp_path):
    src = ('local m = "8G"\nprovium:claim({memory = m})\ntest("t", function(t) end)\n')
    ran = dispatch(tmp_path, {"big.test.lua": src}, pool(2 * GIB, 2))
    err = ran.result("big.test.lua").chunk_error
    assert "lab claim refused: lab claim exceeds total pool budget: the claim is 8 GiB / 0 cpus" in err
    assert err.startswith(ran.files[0].path + ":2:")  # the file and line of the claim


def test_two_files_claiming_half_the_pool_run_together(tmp_path):
    half = HOLD % ("1G", 1, 1.5)
    ran = dispatch(tmp_path, {"a.test.lua": half, "b.test.lua": half}, pool(2 * GIB + 200 * MIB, 2))
    for n in ("a.test.lua", "b.test.lua"):
        ran.assert_passed(n)
    # both held their claim at the same moment
    assert max(ran.ts("claim_acquired", n) for n in ("a.test.lua", "b.test.lua")) < \
        min(ran.ts("claim_released", n) for n in ("a.test.lua", "b.test.lua"))
    acq = ran.events("claim_acquired", "a.test.lua")[0].payload
    assert acq.amount == ev.ResourceAmount(GIB, 1) and acq.path == ran.files[0].path


def test_three_files_claiming_half_the_pool_run_two_then_one(tmp_path):
    half = HOLD % ("1G", 1, 1.5)
    names = ("a.test.lua", "b.test.lua", "c.test.lua")
    ran = dispatch(tmp_path, {n: half for n in names}, pool(2 * GIB + 200 * MIB, 2))
    for n in names:
        ran.assert_passed(n)
    spans = sorted((ran.ts("claim_acquired", n), ran.ts("claim_released", n)) for n in names)
    (a0, a1), (b0, b1), (c0, c1) = spans
    assert b0 < a1 and a0 < b1  # the first two overlap
    assert c0 >= min(a1, b1)  # the third got its claim only once one of them was done
    # it waited for the pool, yet its 1.5 s hold was never counted against a timeout
    states = [f.payload for f in ran.events("pool_state")]
    assert states and all(s.used.memory_bytes <= 2 * GIB + 200 * MIB for s in states)
    assert states[-1].used == ev.ResourceAmount(0, 0)  # all given back at the end


def test_waiting_for_the_pool_does_not_count_against_timeouts(tmp_path):
    whole = '''
    test("hold", {timeout = "1s"}, function(t)
      _provium_sleep(%s)                       -- b comes second
      provium:claim({memory = "2G", cpus = 2})
      _provium_sleep(%s)
    end)
    '''
    ran = dispatch(tmp_path, {"a.test.lua": whole % (0, 2.0), "b.test.lua": whole % (0.5, 0)},
                   pool(2 * GIB + 200 * MIB, 2), timeout=1.5)
    a = ran.result("a.test.lua")
    # a holds the pool past its own 1 s limit: a real timeout
    assert a.tests[0].status == "timed_out", a.tests
    # b waited ~2 s for the pool, more than its test and file limits, and still passed
    ran.assert_passed("b.test.lua")
    assert ran.ts("claim_acquired", "b.test.lua") >= ran.ts("claim_released", "a.test.lua")


def test_vm_boots_are_charged_and_a_second_claim_is_refused(tmp_path):
    src = '''
    test("charged", function(t)
      local a = provium:vm("a", "linux", {memory = "256M"}):boot()
      local ok, err = pcall(function() provium:vm("b", "linux", {memory = "256M"}):boot() end)
      t:assert(not ok)
      t:assert_contains(err, "the pool is deadlocked")
      t:assert_contains(err, "provium:claim")
      a:shutdown()
      provium:vm("c", "linux", {memory = "256M"}):boot()   -- a's charge was given back
    end)
    test("too big", function(t)
      provium:vm("huge", "linux", {memory = "4G"}):boot()
    end)
    test("lab boot is one joint charge", function(t)
      local l = provium:lab("pair")
      l:vm("x", "linux", {memory = "128M"}); l:vm("y", "linux", {memory = "128M"})
      l:boot()
    end)
    '''
    ran = dispatch(tmp_path, {"v.test.lua": src}, pool(2 * GIB, 1))
    r = ran.result("v.test.lua")
    by = {t.name: t for t in r.tests}
    assert by["charged"].status == "passed", by["charged"].message
    assert "vm `huge` requested 4.1 GiB / 1 cpu, which exceeds the pool total (2 GiB / 1 cpu)" in by["too big"].message
    # two 1-cpu VMs in a 1-cpu pool can never boot together
    msg = by["lab boot is one joint charge"].message
    assert "lab boot cannot reserve for its members" in msg and "exceeds the pool total" in msg


def test_boots_draw_from_the_claim_which_is_a_hard_cap(tmp_path):
    src = '''
    provium:claim({memory = "1G", cpus = 1})
    test("within", function(t)
      provium:vm("a", "linux", {memory = "512M"}):boot()
      local ok, err = pcall(function() provium:vm("b", "linux", {memory = "128M"}):boot() end)
      t:assert(not ok)
      t:assert_contains(err, "but the file's claim is 1 GiB / 1 cpu with 612 MiB / 1 cpu already in use")
      t:assert_contains(err, "raise provium:claim")
    end)
    '''
    ran = dispatch(tmp_path, {"c.test.lua": src}, pool(4 * GIB, 4))
    ran.assert_passed("c.test.lua")


BARRIER = '''
test("meet", function(t)
  local ok, why = provium:barrier("sync", 2, 30)
  t:assert(ok, why)
end)
'''


def test_a_barrier_of_two_is_met_by_two_files_running_at_once(tmp_path):
    ran = dispatch(tmp_path, {"a.test.lua": BARRIER, "b.test.lua": BARRIER}, pool(2 * GIB, 2))
    ran.assert_passed("a.test.lua")
    ran.assert_passed("b.test.lua")


def test_a_barrier_that_can_never_be_met_says_so(tmp_path):
    lone = '''
    test("alone", function(t)
      local ok, why = provium:barrier("sync", 3, 30)
      t:assert_eq(ok, false)
      t:log(why)
      assert(provium:barrier("sync", 3, 30))   -- the idiom: fail with the reason
    end)
    '''
    ran = dispatch(tmp_path, {"a.test.lua": lone, "b.test.lua": 'test("t", function(t) end)'}, pool(2 * GIB, 2))
    t = ran.result("a.test.lua").tests[0]
    assert t.status == "failed"
    assert "barrier `sync` can never be met: it waits for 3 callers but only" in t.message


def test_a_barrier_that_is_not_met_in_time_times_out(tmp_path):
    waiter = '''
    test("waits", function(t)
      local ok, why = provium:barrier("sync", 2, 0.5)
      t:assert_eq(ok, false)
      t:assert_contains(why, "barrier `sync`: timed out with 1 of 2 callers arrived")
    end)
    '''
    ran = dispatch(tmp_path, {"a.test.lua": waiter, "b.test.lua": 'test("t", function(t) _provium_sleep(2) end)'},
                   pool(2 * GIB, 2))
    ran.assert_passed("a.test.lua")


def test_psi_pressure_holds_back_new_files(tmp_path):
    fake = tmp_path / "cpu"
    fake.write_text("some avg10=55.00 avg60=20.00 avg300=5.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    quick = 'test("t", function(t) _provium_sleep(0.3) end)'
    ran = dispatch(tmp_path, {"a.test.lua": quick, "b.test.lua": quick}, pool(2 * GIB, 2),
                   psi_paths=[str(fake)])
    ran.assert_passed("a.test.lua")
    ran.assert_passed("b.test.lua")
    (blocked,) = ran.events("file_blocked", "b.test.lua")
    assert blocked.payload.reason == "psi_pressure"
    assert not ran.events("file_blocked", "a.test.lua")  # the first file is never held back
    assert ran.ts("file_dispatched", "b.test.lua") >= ran.ts("file_completed", "a.test.lua")


def test_psi_pressure_does_not_hold_back_the_partner_of_a_waiting_barrier(tmp_path):
    """Under pressure a new file waits, unless every running file is itself waiting (at a
    barrier or for the pool): holding it back then could only time the barrier out."""
    fake = tmp_path / "cpu"
    fake.write_text("some avg10=55.00 avg60=20.00 avg300=5.00 total=1\n")
    meet = 'test("meet", function(t) t:assert(provium:barrier("both", 2, 20)) end)'
    ran = dispatch(tmp_path, {"a.test.lua": meet, "b.test.lua": meet}, pool(2 * GIB, 2), psi_paths=[str(fake)])
    ran.assert_passed("a.test.lua")
    ran.assert_passed("b.test.lua")


def test_no_psi_pressure_lets_files_run_together(tmp_path):
    fake = tmp_path / "cpu"
    fake.write_text("some avg10=1.50 avg60=0.00 avg300=0.00 total=1\n")
    quick = 'test("t", function(t) _provium_sleep(1) end)'
    ran = dispatch(tmp_path, {"a.test.lua": quick, "b.test.lua": quick}, pool(2 * GIB, 2),
                   psi_paths=[str(fake), str(tmp_path / "missing")])
    assert not ran.events("file_blocked")
    assert ran.ts("file_dispatched", "b.test.lua") < ran.ts("file_completed", "a.test.lua")


def test_local_vms_are_not_charged(tmp_path):
    """On `--vmm local` a file holds one CPU and its VMs (host processes) cost nothing:
    three VMs boot together in a one-CPU pool."""
    src = '''
    local root = provium
    for _, n in ipairs({"a", "b", "c"}) do provium:vm(n, "linux") end
    test("boot", function(t) root:boot() end)
    '''
    p = PoolSize(total=ev.ResourceAmount(GIB, 1), per_file=ev.ResourceAmount(FILE_OVERHEAD, 1), charge_vms=False)
    ran = dispatch(tmp_path, {"l.test.lua": src}, p)
    ran.assert_passed("l.test.lua")


def test_a_work_dir_too_long_for_a_unix_socket_still_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    ran = dispatch(deep, {"a.test.lua": BARRIER.replace("2, 30", "1, 30")}, pool(2 * GIB, 2))
    ran.assert_passed("a.test.lua")


def test_the_short_socket_dir_of_a_killed_run_is_swept(tmp_path):
    """A long work dir puts the coordinator's socket in a directory under /tmp, named
    like a run's own temp entries, so a run killed with SIGKILL leaves nothing the next
    run does not remove."""
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    stale = Path(f"/tmp/provium-run-{gone.pid}-coord-test")
    stale.mkdir(exist_ok=True)
    (stale / "coord.sock").write_bytes(b"")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    ran = dispatch(deep, {"a.test.lua": 'test("t", function(t) end)'}, pool(2 * GIB, 2))
    ran.assert_passed("a.test.lua")
    assert not stale.exists()
    assert not list(Path("/tmp").glob(f"provium-run-{os.getpid()}-coord-*"))  # its own is removed too


def test_a_refused_claim_holds_nothing_and_may_be_retried(tmp_path):
    src = '''
    test("retry", function(t)
      local big = "8G"
      local ok, err = pcall(function() provium:claim({memory = big}) end)
      t:assert(not ok)
      t:assert_contains(err, "exceeds total pool budget")
      provium:claim({memory = "1G"})          -- not "already held"
    end)
    '''
    ran = dispatch(tmp_path, {"r.test.lua": src}, pool(2 * GIB, 2))
    ran.assert_passed("r.test.lua")

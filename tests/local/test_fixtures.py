"""Fixtures on the local backend: build once, cache hits, the cross-process lock,
corrupt entries, LRU eviction, the key, and `provium fixture ...`."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from provium.config import Config, builtin_linux_profile
from provium.fixtures.key import KeyMaker
from provium.fixtures.store import Store

LOCAL = ["--vmm", "local", "--no-progress"]

BASE = '''
local vm = provium:vm("base", "linux"):boot()
vm:run("sleep 1")  -- long enough for a second runner to find the lock held
return vm:snapshot()
'''

USER = '''
test("uses the fixture", function(t)
  local vm = provium:vm_fixture("fixtures/base")
  t:assert_eq(vm:state(), "booted")
  t:assert_eq(vm:name(), "fixture:fixtures_base")
  t:assert(vm:run("true"):ok())
end)
'''


def write(p: Path, body: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


def provium(*args, cwd, env=None, timeout=120):
    e = dict(os.environ)
    e["PROVIUM_RERUN_STATE"] = os.path.join(cwd, ".rerun.json")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "provium.cli.main", *args], cwd=cwd, env=e, check=False,
                          capture_output=True, timeout=timeout)


def all_events(path: Path) -> list[tuple[str, dict]]:
    data = path.read_bytes() if path.exists() else b""
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        m = msgpack.unpackb(data[i + 4:i + 4 + n])
        i += 4 + n
        out.append((m["kind"], m["payload"]))
    return out


def fixture_events(path: Path) -> list[tuple[str, dict]]:
    data = path.read_bytes() if path.exists() else b""
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        m = msgpack.unpackb(data[i + 4:i + 4 + n])
        i += 4 + n
        if m["kind"].startswith("fixture_"):
            out.append((m["kind"], m["payload"]))
    return out


@pytest.fixture
def proj(tmp_path):
    write(tmp_path / "provium.toml", f'[provium]\ncache_dir = "{tmp_path / "cache"}"\n')
    write(tmp_path / "fixtures" / "base.fixture.lua", BASE)
    write(tmp_path / "a.test.lua", USER)
    write(tmp_path / "b.test.lua", USER)
    return tmp_path


def test_two_files_build_once_then_the_next_run_hits(proj):
    r = provium(*LOCAL, "--save-events", "ev1", "a.test.lua", "b.test.lua", cwd=str(proj))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    kinds = [k for k, _ in fixture_events(proj / "ev1")]
    # Whether the second file ran while the first built depends on the dispatcher (it holds
    # files back under CPU pressure); either way the fixture is built exactly once.
    assert kinds.count("fixture_build_started") == 1
    assert kinds.count("fixture_build_done") == 1 + kinds.count("fixture_build_waiting")
    assert kinds.count("fixture_cache_hit") == 2
    spawned = [p for k, p in all_events(proj / "ev1") if k == "vm_spawned"]
    assert [p["vm_name"] for p in spawned] == ["fixture:fixtures_base", "fixture:fixtures_base"]  # no build VM
    r = provium(*LOCAL, "--save-events", "ev2", "a.test.lua", cwd=str(proj))
    assert r.returncode == 0
    assert [k for k, _ in fixture_events(proj / "ev2")] == ["fixture_cache_hit"]


RUNNER = """
import json, sys
from provium.runner.file_runner import run_file
from provium.runner.settings import RunSettings
events = []
out = run_file(sys.argv[1], RunSettings(vmm="local", config_path=sys.argv[2]), events.append)
kinds = [(e.KIND, getattr(e, "held_by_file", None)) for e in events if e.KIND.startswith("fixture_")]
print(json.dumps({"kinds": kinds, "ok": all(t.status == "passed" for t in out.tests)}))
"""


def test_two_runner_processes_build_once_and_one_waits(proj):
    """Two runner processes started together, no dispatcher in between: the lock decides."""
    import json

    write(proj / "fixtures" / "base.fixture.lua", BASE.replace("sleep 1", "sleep 3"))
    procs = [subprocess.Popen([sys.executable, "-c", RUNNER, str(proj / f), str(proj / "provium.toml")],
                              cwd=str(proj), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for f in ("a.test.lua", "b.test.lua")]
    results = [json.loads(p.communicate(timeout=120)[0].decode().strip().splitlines()[-1]) for p in procs]
    assert all(r["ok"] for r in results)
    kinds = [k for r in results for k, _ in r["kinds"]]
    assert kinds.count("fixture_build_started") == 1
    assert kinds.count("fixture_build_waiting") == 1
    assert kinds.count("fixture_build_done") == 2 and kinds.count("fixture_cache_hit") == 2
    held = [h for r in results for k, h in r["kinds"] if k == "fixture_build_waiting"][0]
    assert held.endswith(("a.test.lua", "b.test.lua"))


def _entry(proj: Path) -> Path:
    snaps = list((proj / "cache").glob("*.snap"))
    assert len(snaps) == 1
    return snaps[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_entry_is_reported_and_rebuilt(proj, damage):
    assert provium(*LOCAL, "a.test.lua", cwd=str(proj)).returncode == 0
    entry = _entry(proj)
    data = entry.read_bytes()
    entry.write_bytes(b"not zstd at all" if damage == "garbage" else data[: len(data) // 2])
    for hot in (proj / "cache" / "hot").iterdir():
        hot.unlink()  # a fresh machine: the compressed entry is all there is
    r = provium(*LOCAL, "--save-events", "ev", "a.test.lua", cwd=str(proj))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    # (the runner's stderr warning lands in its log; the dispatcher shows it only on a crash)
    assert [k for k, _ in fixture_events(proj / "ev")] == [
        "fixture_build_started", "fixture_build_done", "fixture_cache_hit"]
    assert _entry(proj).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_fixture_errors(proj):
    write(proj / "fixtures" / "num.fixture.lua", "return 42\n")
    write(proj / "fixtures" / "lab.fixture.lua", 'provium:vm("x", "linux"):boot()\nreturn provium:snapshot()\n')
    write(proj / "fixtures" / "boom.fixture.lua", 'error("kaput")\n')
    write(proj / "e.test.lua", '''
test("missing", function(t) provium:vm_fixture("fixtures/none") end)
test("number", function(t) provium:vm_fixture("fixtures/num") end)
test("lab as vm", function(t) provium:vm_fixture("fixtures/lab") end)
test("vm as lab", function(t) provium:lab_fixture("fixtures/base") end)
test("boom", function(t) provium:vm_fixture("fixtures/boom") end)
test("bad name", function(t) provium:vm_fixture(7) end)
test("lab ok", function(t)
  local lab = provium:lab_fixture("fixtures/lab")
  t:assert_eq(lab:vm("x"):state(), "booted")
  t:assert_eq(lab.x:state(), "booted")
end)
''')
    r = provium(*LOCAL, "--json", "e.test.lua", cwd=str(proj))
    out = r.stdout.decode()
    assert "fixture `fixtures/none` not found in any test root" in out
    assert "fixture must return vm:snapshot() or provium:snapshot(); got number" in out
    assert "vm_fixture `fixtures/lab` returned a lab snapshot; use lab_fixture instead" in out
    assert "lab_fixture `fixtures/base` returned a single-VM snapshot; expected provium:snapshot()" in out
    assert "fixture `fixtures/boom` build failed: chunk:" in out and "kaput" in out
    assert "provium:vm_fixture(name): name must be a string, got number" in out
    assert '"lab ok"' in out and out.count('"passed"') >= 1
    assert "Traceback" not in out + r.stderr.decode()


def test_cli_fixture_commands(proj):
    r = provium("fixture", "list", cwd=str(proj))
    assert r.stdout.decode().startswith("(no cache directory at ")
    r = provium(*LOCAL[:2], "fixture", "stale", cwd=str(proj))
    assert r.stdout.decode().strip().endswith("1 stale fixture(s)") and "base.fixture.lua" in r.stdout.decode()
    r = provium(*LOCAL[:2], "fixture", "build", "fixtures/base", cwd=str(proj))
    assert r.returncode == 0 and r.stdout.decode().startswith("  built: ")
    r = provium(*LOCAL[:2], "fixture", "build", "fixtures/base", cwd=str(proj))
    assert r.stdout.decode().startswith("  already built: ")
    r = provium(*LOCAL[:2], "fixture", "rebuild", "fixtures/base", cwd=str(proj))
    assert "evicted cache entry for `fixtures/base`; rebuilding" in r.stdout.decode()
    assert "  rebuilt: " in r.stdout.decode()
    r = provium(*LOCAL[:2], "fixture", "stale", cwd=str(proj))
    assert r.stdout.decode().strip() == "0 stale fixture(s)"
    r = provium("fixture", "list", cwd=str(proj))
    lines = r.stdout.decode().splitlines()
    assert lines[0].split()[2] == "vm" and lines[-1].startswith("1 entries, ")
    r = provium(*LOCAL[:2], "fixture", "build", "nope", cwd=str(proj))
    assert r.returncode == 2 and "fixture `nope` not found in any test root" in r.stderr.decode()
    r = provium("list", "--fixtures", cwd=str(proj))
    assert "fixtures/base.fixture.lua" in r.stdout.decode() and "1 fixture(s) found" in r.stdout.decode()
    write(proj / "fixtures" / "pair.fixture.lua", 'provium:vm("x", "linux"):boot()\nreturn provium:snapshot()\n')
    r = provium(*LOCAL[:2], "fixture", "build", "fixtures/pair", cwd=str(proj))
    assert r.returncode == 0 and r.stdout.decode().startswith("  built lab fixture: "), r.stderr.decode()
    assert r.stdout.decode().strip().endswith(".lab")
    r = provium("fixture", "clean", cwd=str(proj))
    assert r.stdout.decode().startswith("  removed ")
    assert not list((proj / "cache").glob("*.snap"))


def _fake(store: Store, key: str, size: int, atime: float) -> None:
    store.ensure()
    p = store.snap(key)
    p.write_bytes(os.urandom(size))
    os.utime(p, (atime, atime))
    store.lock_path(key, "vm").write_text("")


def test_lru_eviction(tmp_path):
    store = Store(tmp_path)
    now = time.time()
    _fake(store, "old", 40_000, now - 300)
    _fake(store, "mid", 40_000, now - 200)
    _fake(store, "new", 40_000, now - 100)
    store.touch("old", "vm")  # a hit makes the oldest the most recent
    removed = store.evict(90_000)
    assert [e.key for e in removed] == ["mid"]
    assert sorted(e.key for e in store.entries()) == ["new", "old"]
    assert not store.lock_path("mid", "vm").exists()
    assert store.evict(10**9) == []


def test_startup_eviction_honours_cache_max_size(proj):
    store = Store(proj / "cache")
    _fake(store, "a" * 64, 300_000, time.time() - 100)
    _fake(store, "b" * 64, 300_000, time.time())
    with open(proj / "provium.toml", "a") as f:
        f.write('cache_max_size = "400K"\n')
    assert provium(*LOCAL, "a.test.lua", cwd=str(proj)).returncode == 0
    keys = {e.key for e in store.entries()}
    assert "a" * 64 not in keys  # evicted at start-up, before the run built its own entry


def test_key_follows_its_inputs(tmp_path):
    cfg = Config(profiles={"linux": builtin_linux_profile()}, roots=[str(tmp_path)])
    write(tmp_path / "helpers" / "setup.lua", "return {}\n")
    write(tmp_path / "data.txt", "v1")
    write(tmp_path / "tool", "bin")
    write(tmp_path / "dep.fixture.lua", "return 1\n")
    f = write(tmp_path / "f.fixture.lua", '''local h = require("helpers.setup")
provium:depends_on_file("data.txt")
local d = provium:vm_fixture("dep")
vm:push_file("tool", "/usr/bin/tool")
vm:push_file("ignored", "/x", {auto_dep = false})
''')

    def key():
        return KeyMaker(cfg, "local").key_of_file(f)

    k0 = key()
    assert k0 == key() and len(k0) == 64
    assert KeyMaker(cfg, "qemu").key_of_file(f) != k0
    for path, body in [("helpers/setup.lua", "return {1}\n"), ("dep.fixture.lua", "return 2\n"),
                       ("tool", "bin2"), ("data.txt", "v2")]:
        before = key()
        write(tmp_path / path, body)
        assert key() != before, path
    before = key()
    write(tmp_path / "ignored", "whatever")
    assert key() == before


DISK_FIXTURE = '''
local vm = provium:vm("withdisk", "linux"):boot({disks = {{id = "d", scratch = "1M"}}})
vm:disk("d"):write_sectors(3, "SAVED-IN-FIXTURE")
return vm:snapshot()
'''

DISK_LAB_FIXTURE = '''
local lab = provium:lab("pair")
local vm = lab:vm("a", "linux"):boot({disks = {{id = "d", scratch = "1M"}}})
vm:disk("d"):write_sectors(3, "SAVED-IN-LAB")
return lab:snapshot()
'''

DISK_USER = '''
test("a fixture's disks come back", function(t)
  local vm = provium:vm_fixture("fixtures/disk")
  t:assert_eq(vm:disk("d"):read_sectors(3, 1):sub(1, 16), "SAVED-IN-FIXTURE")
  local lab = provium:lab_fixture("fixtures/disklab")
  t:assert_eq(lab.a:disk("d"):read_sectors(3, 1):sub(1, 12), "SAVED-IN-LAB")
end)
'''


def test_fixtures_keep_their_vms_disks(tmp_path):
    write(tmp_path / "provium.toml", f'[provium]\ncache_dir = "{tmp_path / "cache"}"\n')
    write(tmp_path / "fixtures" / "disk.fixture.lua", DISK_FIXTURE)
    write(tmp_path / "fixtures" / "disklab.fixture.lua", DISK_LAB_FIXTURE)
    write(tmp_path / "d.test.lua", DISK_USER)
    for run in ("cold", "warm"):  # built then restored, then restored from the cache alone
        r = provium(*LOCAL, "d.test.lua", cwd=str(tmp_path))
        assert r.returncode == 0, (run, r.stdout.decode() + r.stderr.decode())
    store = Store(tmp_path / "cache")
    [vm_entry] = [e for e in store.entries() if e.kind == "vm"]
    store.remove(vm_entry.key, "vm")
    assert not list((tmp_path / "cache").glob(f"**/{vm_entry.key}*"))  # disks removed with their entry


def test_a_waiter_names_a_holder_that_has_not_written_its_line_yet(tmp_path):
    """Between taking the lock and writing its line a holder names nobody; the waiter
    gives it a moment instead of reporting an empty holder."""
    import fcntl
    import threading

    from provium.fixtures.lock import KeyLock

    path = tmp_path / "k.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the holder has the lock, its line comes later

    def holder():
        time.sleep(0.3)
        os.pwrite(fd, b"pid=1 file=/x/holder.test.lua\n", 0)
        time.sleep(0.3)
        os.close(fd)  # releases the lock

    seen: list[str] = []
    t = threading.Thread(target=holder)
    t.start()
    lock = KeyLock(path, "waiter.test.lua")
    assert lock.acquire(on_wait=seen.append) is True
    lock.release()
    t.join()
    assert len(seen) == 1 and "file=/x/holder.test.lua" in seen[0]

"""Workers through the whole stack on the local backend: open_file with the
worker's credentials, kill reaching its processes, join, and process streams."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from test_lua_support import run_lua

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import GuestOsError, HandleError


@pytest.fixture(scope="module")
def vm():
    with Session(vmm.create("local"), load(None)) as s:
        yield VM(s, "workers", "linux").boot()


@pytest.fixture
def files():
    """A root-only file and a public one, in a directory every user may search."""
    d = Path(tempfile.mkdtemp(prefix="provium-workers-"))
    os.chmod(d, 0o755)
    (d / "secret").write_text("root only")
    os.chmod(d / "secret", 0o600)
    (d / "public").write_text("for all")
    os.chmod(d / "public", 0o644)
    yield d
    shutil.rmtree(d)


def test_open_file_uses_the_workers_credentials(vm, files):
    w = vm.spawn_worker(uid=65534, gid=65534)
    try:
        with pytest.raises(GuestOsError, match="Permission denied") as ei:
            w.open_file(str(files / "secret"), {"read": True})
        assert ei.value.errno == 13 and "uid 65534" in str(ei.value) and str(files / "secret") in str(ei.value)
        f = w.open_file(str(files / "public"), "r")
        assert vm.open_file_count() == 1  # tracked by the VM like any file
        assert f.read(100) == b"for all"
        g = w.open_file(str(files / "public"), "r")
        g.close()
        assert vm.open_file_count() == 1
    finally:
        assert w.join() == 0
    assert vm.open_file_count() == 0  # joining the worker closed its files
    with pytest.raises(HandleError, match="worker that opened it was joined"):
        f.read(1)
    root = vm.spawn_worker()
    with root:
        assert root.open_file(str(files / "secret"), "r").read(100) == b"root only"
    assert vm.open_file_count() == 0


def test_kill_reaches_the_workers_processes_and_join_reports_the_worst(vm):
    w = vm.spawn_worker()
    a = w.run_async("sleep 30")
    b = w.run_async(["sleep", "30"])
    assert w.kill("KILL") == 2
    r = a.wait("5s")
    assert (r.status, r.signal) == ("signalled", 9)
    assert w.run("echo alive").stdout == b"alive\n"  # the worker itself was not signalled
    assert w.join() == 128 + 9  # b was reaped by join
    with pytest.raises(HandleError, match=r"was reaped by Worker.join of worker #\d+"):
        b.wait()


def test_worker_process_streams(vm):
    w = vm.spawn_worker()
    with w:
        p = w.run_async(["sh", "-c", "echo one; echo oops >&2; sleep 0.2; echo two"])
        out, err = p.stdout_stream(), p.stderr_stream()
        assert out.read_until("two", "5s").endswith(b"two")
        assert err.read_until("oops", "5s").endswith(b"oops")
        assert p.wait().stdout == b"one\ntwo\n"
        out.close()
        err.close()


def test_lua_worker_surface(tmp_path, files):
    r = run_lua(tmp_path, f'''
        local vm = provium:vm("w", "linux"):boot()
        local d = "{files}"
        test("open_file as nobody", function(t)
          local w = vm:spawn_worker({{uid = 65534, gid = 65534}})
          local ok, err = pcall(w.open_file, w, d .. "/secret", {{read = true}})
          t:assert(not ok); t:assert_contains(err, "Permission denied")
          local f = w:open_file(d .. "/public", {{read = true}})
          t:assert_eq(f:read(100), "for all")
          t:assert_eq(vm:open_file_count(), 1)
          t:assert_eq(w:join(), 0)
          t:assert_eq(vm:open_file_count(), 0)
        end)
        test("kill then wait then join", function(t)
          local w = vm:spawn_worker()
          local p = w:run_async("sleep 30")
          local q = w:run_async("sleep 30")
          w:kill("TERM")
          local r = p:wait("5s")
          t:assert_eq(r.status, "signalled"); t:assert_eq(r.signal, 15)
          t:assert_eq(w:join(), 143)
        end)
        test("streams", function(t)
          local w = vm:spawn_worker()
          local p = w:run_async("echo hello; echo world")
          local s = p:stdout_stream()
          s:expect("world", "5s")
          p:wait()
        end)
        test("open_file mode", function(t) vm:spawn_worker():open_file(d .. "/public") end)
    ''', name="workers.test.lua")
    for name in ("open_file as nobody", "kill then wait then join", "streams"):
        assert r.status(name) == "passed", (name, r.message(name))
    assert "worker:open_file: argument #2 (mode) must be a table" in r.message("open_file mode")

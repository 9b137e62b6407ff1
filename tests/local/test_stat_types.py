"""vm:stat / vm:listdir entry types and `{follow=false}` on the local backend (guest paths are host paths)."""

import os
import socket
import stat as st

import pytest
from test_lua_support import run_lua

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import ArgumentError


@pytest.fixture(scope="module")
def vm():
    with Session(vmm.create("local"), load(None)) as s:
        yield VM(s, "stat", "linux").boot()


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "file").write_bytes(b"abc")
    (tmp_path / "dir").mkdir()
    os.symlink("file", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    os.mknod(tmp_path / "blk", st.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(tmp_path / "chr", st.S_IFCHR | 0o600, os.makedev(1, 3))
    yield tmp_path
    sock.close()


KINDS = {"file": "file", "dir": "directory", "link": "symlink", "fifo": "fifo", "sock": "socket",
         "blk": "block_device", "chr": "char_device"}


def test_stat_and_listdir_report_every_documented_type(vm, tree):
    for name, kind in KINDS.items():
        if name != "link":
            assert vm.stat(str(tree / name)).entry_type == kind, name
    assert vm.stat("/dev/null").entry_type == "char_device"
    assert {e.name: e.entry_type for e in vm.listdir(str(tree))} == KINDS


def test_stat_follow_false_reports_the_link_itself(vm, tree):
    link = str(tree / "link")
    assert vm.stat(link).entry_type == "file"  # follows by default
    assert vm.stat(link, follow=True).entry_type == "file"
    lst = vm.stat(link, {"follow": False})
    assert lst.entry_type == "symlink" and lst.size == len("file")
    with pytest.raises(ArgumentError, match=r"VM.stat: unknown option `follows` \(valid: follow\)"):
        vm.stat(link, follows=False)
    with pytest.raises(ArgumentError, match="`follow` must be a boolean, got string"):
        vm.stat(link, follow="no")


def test_lua_stat_types_and_follow(tmp_path, tree):
    r = run_lua(tmp_path, f'''
        local vm = provium:vm("s", "linux"):boot()
        local d = "{tree}"
        test("types", function(t)
          t:assert_eq(vm:stat("/dev/null").entry_type, "char_device")
          t:assert_eq(vm:stat(d .. "/fifo").entry_type, "fifo")
          t:assert_eq(vm:stat(d .. "/sock").entry_type, "socket")
          t:assert_eq(vm:stat(d .. "/blk").entry_type, "block_device")
          t:assert_eq(vm:stat(d .. "/link").entry_type, "file")
          t:assert_eq(vm:stat(d .. "/link", {{follow = false}}).entry_type, "symlink")
          local seen = {{}}
          for _, e in ipairs(vm:listdir(d)) do seen[e.name] = e.entry_type end
          t:assert_eq(seen.chr, "char_device"); t:assert_eq(seen.link, "symlink")
        end)
        test("bad opts", function(t) vm:stat(d, 5) end)
    ''', name="stat.test.lua")
    assert r.status("types") == "passed", r.message("types")
    assert "vm:stat: argument #2 (opts) must be a table, got number" in r.message("bad opts")

"""VM file operations, file handles and tails through the real agent (local backend).

On the local backend guest paths are host paths, so each test works in its own
tmp_path and can check the result on the host directly.
"""

import os

import pytest

from provium.errors import ProviumError

from provium import vmm
from provium.config import load
from provium.host import VM, File, Session
from provium.host.errors import (
    AgentCommError,
    ArgumentError,
    GuestOsError,
    HandleError,
    StreamClosed,
    StreamEof,
    StreamTimeout,
)


@pytest.fixture(scope="module")
def vm():
    with Session(vmm.create("local"), load(None)) as s:
        yield VM(s, "files", "linux").boot()


# ---- whole-file ops ----------------------------------------------------------------------

def test_write_then_read_is_binary_safe(vm, tmp_path):
    p = str(tmp_path / "bin")
    data = bytes(range(256)) * 3 + b"\0end"
    vm.write_file(p, data)
    assert vm.read_file(p) == data
    assert (tmp_path / "bin").read_bytes() == data


def test_read_missing_file_is_errno_2(vm, tmp_path):
    with pytest.raises(GuestOsError) as ei:
        vm.read_file(str(tmp_path / "missing"))
    assert ei.value.errno == 2
    assert str(ei.value).startswith("os: ") and "No such file" in str(ei.value)


def test_exclusive_write_on_existing_file_is_errno_17_and_leaves_it(vm, tmp_path):
    p = tmp_path / "keep"
    p.write_bytes(b"original")
    with pytest.raises(GuestOsError) as ei:
        vm.write_file(str(p), b"clobber", mode="exclusive")
    assert ei.value.errno == 17
    assert p.read_bytes() == b"original"
    vm.write_file(str(tmp_path / "new"), b"fresh", {"mode": "exclusive"})
    assert (tmp_path / "new").read_bytes() == b"fresh"


def test_append_and_perm(vm, tmp_path):
    p = str(tmp_path / "log")
    vm.write_file(p, "a", perm=0o600)
    vm.write_file(p, "b", mode="append")
    assert vm.read_file(p) == b"ab"
    assert vm.stat(p).perm == 0o600
    with pytest.raises(ArgumentError, match="`mode` must be"):
        vm.write_file(p, "x", mode="truncate")
    with pytest.raises(ArgumentError, match="unknown option `perms`"):
        vm.write_file(p, "x", perms=0o600)


def test_read_file_refuses_huge_files_before_reading(vm, tmp_path):
    p = tmp_path / "sparse"
    with open(p, "wb") as f:
        f.truncate(100 << 20)
    with pytest.raises(GuestOsError) as ei:
        vm.read_file(str(p))
    assert ei.value.errno == 27
    assert "96 MiB" in str(ei.value) and "tail_file" in str(ei.value) and "open_file" in str(ei.value)


def test_stat_listdir_mkdir_rename_unlink_exists(vm, tmp_path):
    d = str(tmp_path / "a" / "b")
    with pytest.raises(GuestOsError) as ei:
        vm.mkdir(d)
    assert ei.value.errno == 2
    vm.mkdir(d, parents=True)
    vm.write_file(d + "/f", "12345")
    st = vm.stat(d + "/f")
    assert st.size == 5 and st.entry_type == "file" and 1e9 < st.mtime < 1e15
    assert st.mtime_ns == (tmp_path / "a" / "b" / "f").stat().st_mtime_ns
    assert 0 <= st.perm <= 0o7777
    assert vm.stat(d).entry_type == "directory"
    os.symlink(d + "/f", d + "/link")
    assert vm.stat(d + "/link").entry_type == "file"  # stat follows symlinks
    names = sorted((e.name, e.entry_type) for e in vm.listdir(d))
    assert names == [("f", "file"), ("link", "symlink")]
    vm.rename(d + "/f", d + "/g")
    assert vm.exists(d + "/g") and not vm.exists(d + "/f") and not vm.exists(d + "/g/x")
    vm.unlink(d + "/g")
    vm.unlink(d + "/link")
    vm.unlink(d)  # an empty directory
    assert not os.path.exists(d)
    with pytest.raises(GuestOsError) as ei:
        vm.stat(d)
    assert ei.value.errno == 2
    vm.mkdir(str(tmp_path / "p"), {"perm": 0o700})
    assert vm.stat(str(tmp_path / "p")).perm == 0o700


def test_path_argument_errors(vm):
    with pytest.raises(ArgumentError, match="VM.read_file: `path` must be a path string, got number"):
        vm.read_file(5)
    with pytest.raises(ArgumentError, match="must not be empty"):
        vm.stat("")


# ---- file handles ------------------------------------------------------------------------

def test_file_handle_read_write_seek_tell_close(vm, tmp_path):
    p = str(tmp_path / "h")
    f = vm.open_file(p, {"read": True, "write": True, "create": True, "truncate": True})
    assert vm.open_file_count() == 1 and not vm.is_quiescent()
    assert isinstance(f.fd(), int) and f.fd() > 0
    assert f.write(b"hello world") == 11
    assert f.tell() == 11
    assert f.seek(6) == 6
    assert f.read(3) == b"wor"
    assert f.seek(-2, "end") == 9
    assert f.read_all() == b"ld"
    assert f.read(10) == b""  # EOF is an empty read, not an error
    assert f.seek(0, "set") == 0 and f.seek(4, "cur") == 4
    with pytest.raises(ArgumentError, match="seek: whence must be set/cur/end, got `middle`"):
        f.seek(0, "middle")
    for args in ((-10,), (-10, "set"), (-100, "cur"), (-100, "end")):  # before the start: EINVAL, as lseek
        with pytest.raises(ProviumError, match="seek: .*Invalid argument"):
            f.seek(*args)
    assert f.tell() == 4  # and the position did not move
    f.close()
    f.close()
    assert f.fd() == 0 and repr(f) == "file(closed)"
    assert vm.open_file_count() == 0 and vm.is_quiescent()
    with pytest.raises(HandleError, match="file is closed"):
        f.read(1)


def test_open_modes(vm, tmp_path):
    p = str(tmp_path / "m")
    with pytest.raises(ArgumentError) as ei:
        vm.open_file(p, {})
    assert "`read`, `write`, `append`" in str(ei.value)
    with pytest.raises(ArgumentError, match="at least one of"):
        vm.open_file(p, {"create": True})
    with pytest.raises(ArgumentError, match="unknown mode key `rd`"):
        vm.open_file(p, {"rd": True})
    with vm.open_file(p, "w") as f:
        f.write("one\n")
    with vm.open_file(p, {"append": True}) as f:
        f.write("two\n")
    with vm.open_file(p, "r") as f:
        assert f.read_all() == b"one\ntwo\n"
    with pytest.raises(GuestOsError) as ei:
        vm.open_file(p, {"write": True, "create": True, "exclusive": True})
    assert ei.value.errno == 17
    with pytest.raises(GuestOsError) as ei:
        vm.open_file(str(tmp_path / "none"), "r")
    assert ei.value.errno == 2
    f = vm.open_file(str(tmp_path / "perm"), {"write": True, "create": True, "perm": 0o640})
    f.close()
    assert (os.stat(tmp_path / "perm").st_mode & 0o7777) == 0o640
    assert vm.open_file_count() == 0


def test_unknown_handle_is_an_agent_error_and_vm_stays_up(vm):
    with pytest.raises(AgentCommError) as ei:
        File(vm, 99999, "/nowhere").read(1)
    assert "unknown_handle" in str(ei.value) and "99999" in str(ei.value)
    assert vm.state == "booted"
    assert vm.run("true").ok()


def test_ioctl_fionread_on_an_open_file(vm, tmp_path):
    p = tmp_path / "io"
    p.write_bytes(b"x" * 1234)
    with vm.open_file(str(p), "r") as f:
        out = vm.ioctl(f, 0x541B, b"\0" * 4)  # FIONREAD: bytes left to read
        assert out.ret == 0 and int.from_bytes(out.out_data, "little") == 1234


# ---- tails -------------------------------------------------------------------------------

def test_tail_from_beginning_replays_then_follows(vm, tmp_path):
    p = tmp_path / "t.log"
    p.write_bytes(b"line1\nline2\n")
    t = vm.tail_file(str(p), start="beginning")
    assert vm.open_stream_count() == 1 and not vm.is_quiescent()
    assert t.read_until("line2\n", 5) == b"line1\nline2\n"
    with open(p, "ab") as f:
        f.write(b"line3\nline4\n")
    t.expect("line3\n", 5)
    assert t.read_until("4", 5) == b"line4"
    assert t.next(5) == b"\n"
    t.close()
    assert t.eof() and vm.open_stream_count() == 0 and vm.is_quiescent()
    assert t.drain() == []
    with pytest.raises(StreamClosed):
        t.expect("x")


def test_tail_default_starts_at_end(vm, tmp_path):
    p = tmp_path / "end.log"
    p.write_bytes(b"old stuff\n")
    with vm.tail_file(str(p)) as t:
        assert t.next(0.2) is None
        with open(p, "ab") as f:
            f.write(b"new\n")
        assert t.read_until("\n", 5) == b"new\n"


def test_tail_offsets(vm, tmp_path):
    p = tmp_path / "off.log"
    p.write_bytes(b"0123456789")
    with vm.tail_file(str(p), {"start": 4}) as t:
        assert t.read_until("9", 5) == b"456789"
    with vm.tail_file(str(p), start=-3) as t:
        assert t.read_until("9", 5) == b"789"
    with vm.tail_file(str(p), start=-100) as t:  # clamped to the start of the file
        assert t.read_until("2", 5) == b"012"
    with pytest.raises(ArgumentError, match='opts.start = `middle` \\(expected "beginning"\\|"end"\\|number\\)'):
        vm.tail_file(str(p), start="middle")
    with pytest.raises(ArgumentError, match="second arg must be opts table"):
        vm.tail_file(str(p), "beginning")
    assert vm.open_stream_count() == 0


def test_tail_missing_file_is_errno_2(vm, tmp_path):
    with pytest.raises(GuestOsError) as ei:
        vm.tail_file(str(tmp_path / "nope.log"))
    assert ei.value.errno == 2
    assert vm.open_stream_count() == 0


def test_tail_timeouts_and_eof_flag(vm, tmp_path):
    p = tmp_path / "quiet.log"
    p.write_bytes(b"")
    with vm.tail_file(str(p), start="beginning") as t:
        with pytest.raises(StreamTimeout, match="read_until timed out waiting for `never`"):
            t.read_until("never", 0.2)
        assert not t.eof()
        assert t.drain(0.1) == []


def test_file_tail_stream_starts_at_cursor(vm, tmp_path):
    p = tmp_path / "cur.log"
    p.write_bytes(b"abcdef")
    with vm.open_file(str(p), "r") as f:
        f.read(4)
        with f.tail_stream() as t:
            assert t.meta.kind == "file_tail_stream"
            assert t.read_until("f", 5) == b"ef"


def test_fd_stream_reads_a_handle_and_ends_when_it_closes(vm, tmp_path):
    p = tmp_path / "fd.bin"
    p.write_bytes(b"x" * 100_000)
    f = vm.open_file(str(p), "r")
    s = vm.fd_stream(f)
    assert s.meta.kind == "fd_stream" and s.meta.detail == str(f.fd())
    got = b""
    while len(got) < 100_000:
        chunk = s.next(5)
        assert chunk, "fd_stream stalled"
        got += chunk
    assert got == b"x" * 100_000
    f.close()  # the agent ends the stream once its handle is gone
    with pytest.raises(StreamEof):
        s.read_until("more", 5)
    assert s.eof()
    s.close()
    with pytest.raises(ArgumentError, match="file is closed"):
        vm.fd_stream(f)
    with pytest.raises(ArgumentError, match="VM.fd_stream expected fd or File"):
        vm.fd_stream(0)
    assert vm.is_quiescent()


def test_stream_eof_after_process_exit(vm):
    p = vm.run_async("printf 'a\\nb\\n'")
    s = p.stdout_stream()
    assert s.read_until("b\n", 5) == b"a\nb\n"
    with pytest.raises(StreamEof, match="stream EOF"):
        s.read_until("c", 5)
    assert s.eof()
    s.close()
    p.wait("5s")

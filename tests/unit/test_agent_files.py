"""File ops against the real agent subprocess (the local backend's shape)."""

from __future__ import annotations

import os

from provium.protocol.envelope import Envelope
from provium.protocol.framing import encode_frame
from provium.protocol.messages import (
    CloseArgs,
    GetTimeArgs,
    ListdirArgs,
    MkdirArgs,
    OpenFileArgs,
    ReadArgs,
    ReadFileArgs,
    RenameArgs,
    RunAsyncArgs,
    SeekArgs,
    StatArgs,
    UnlinkArgs,
    WaitArgs,
    WriteArgs,
    WriteFileArgs,
)
from provium.protocol.types import OpenMode, SeekWhence, WriteFileMode


def test_open_write_seek_read_close(agent, tmp_path):
    path = str(tmp_path / "f")
    h = agent.value(OpenFileArgs(path, OpenMode(read=True, write=True, create=True, truncate=True)))
    assert agent.value(WriteArgs(h, b"hello world")).written == 11
    assert agent.value(SeekArgs(h, 6, SeekWhence.SET)) == 6
    assert agent.value(ReadArgs(h, 100)).data == b"world"
    assert agent.value(ReadArgs(h, 100)).data == b""  # EOF is empty, not an error
    assert agent.value(SeekArgs(h, -5, SeekWhence.END)) == 6
    assert agent.value(SeekArgs(h, -2, SeekWhence.CUR)) == 4
    res = agent.ok(SeekArgs(h, -100, SeekWhence.SET))  # before the start: EINVAL, as lseek
    assert not res.ok and "Invalid argument" in str(res.value)
    assert agent.value(SeekArgs(h, 0, SeekWhence.SET)) == 0
    assert agent.value(ReadArgs(h, 5)).data == b"hello"
    assert agent.ok(CloseArgs(h)).ok
    with open(path, "rb") as f:
        assert f.read() == b"hello world"


def test_handles_are_unique_across_kinds_and_never_reused(agent, tmp_path):
    f1 = agent.value(OpenFileArgs("/dev/null", OpenMode(read=True)))
    p = agent.value(RunAsyncArgs("true"))
    agent.value(WaitArgs(p))
    agent.value(CloseArgs(f1))
    f2 = agent.value(OpenFileArgs("/dev/null", OpenMode(read=True)))
    assert f1 > 0 and p > f1 and f2 > p
    agent.value(CloseArgs(f2))


def test_unknown_and_closed_handles_are_agent_errors_naming_the_handle(agent):
    for op in (ReadArgs(99999, 1), WriteArgs(99999, b"x"), SeekArgs(99999, 0), CloseArgs(99999)):
        err = agent.error(op)
        assert err.kind.value == "unknown_handle"
        assert "99999" in err.message and op.KIND in err.message
    h = agent.value(OpenFileArgs("/dev/null", OpenMode(read=True)))
    agent.value(CloseArgs(h))
    assert f"file#{h}" in agent.error(ReadArgs(h, 1)).message


def test_read_is_clamped_to_4_mib(agent, tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * (5 << 20))
    h = agent.value(OpenFileArgs(str(path), OpenMode(read=True)))
    assert len(agent.value(ReadArgs(h, 10 << 20)).data) == 4 << 20
    assert len(agent.value(ReadArgs(h, 10 << 20)).data) == 1 << 20
    agent.value(CloseArgs(h))


def test_open_modes(agent, tmp_path):
    path = str(tmp_path / "m")
    # No access bit at all: refused, nothing created.
    res = agent.ok(OpenFileArgs(path, OpenMode(create=True)))
    assert not res.ok and res.value.errno == 22 and not os.path.exists(path)
    res = agent.ok(OpenFileArgs(path, OpenMode()))
    assert not res.ok and res.value.errno == 22 and "read" in res.value.message
    # Missing file without create.
    res = agent.ok(OpenFileArgs(path, OpenMode(read=True)))
    assert not res.ok and res.value.errno == 2 and path in res.value.message
    # create with a permission; exclusive on an existing file.
    h = agent.value(OpenFileArgs(path, OpenMode(write=True, create=True), create_perm=0o600))
    agent.value(WriteArgs(h, b"abc"))
    agent.value(CloseArgs(h))
    assert os.stat(path).st_mode & 0o7777 == 0o600
    res = agent.ok(OpenFileArgs(path, OpenMode(write=True, create=True, exclusive=True)))
    assert not res.ok and res.value.errno == 17
    # append writes at the end whatever the position.
    h = agent.value(OpenFileArgs(path, OpenMode(append=True)))
    agent.value(WriteArgs(h, b"def"))
    agent.value(CloseArgs(h))
    # truncate empties it.
    with open(path, "rb") as f:
        assert f.read() == b"abcdef"
    h = agent.value(OpenFileArgs(path, OpenMode(write=True, truncate=True)))
    agent.value(CloseArgs(h))
    assert os.path.getsize(path) == 0
    # default creation permission 0644 (our umask permitting).
    other = str(tmp_path / "d")
    old = os.umask(0o022)
    os.umask(old)
    h = agent.value(OpenFileArgs(other, OpenMode(write=True, create=True)))
    agent.value(CloseArgs(h))
    assert os.stat(other).st_mode & 0o777 == 0o644 & ~old
    # writing a read-only handle is an OS error (EBADF), not an agent error.
    h = agent.value(OpenFileArgs(other, OpenMode(read=True)))
    res = agent.ok(WriteArgs(h, b"x"))
    assert not res.ok and res.value.errno == 9
    agent.value(CloseArgs(h))


def test_read_file_and_its_limits(agent, tmp_path):
    path = tmp_path / "r"
    path.write_bytes(b"\x00\x01binary\xff")
    assert agent.value(ReadFileArgs(str(path))).data == b"\x00\x01binary\xff"
    res = agent.ok(ReadFileArgs(str(tmp_path / "missing")))
    assert not res.ok and res.value.errno == 2
    big = tmp_path / "sparse"
    with open(big, "wb") as f:
        f.truncate(100 << 20)  # sparse: costs no disk
    res = agent.ok(ReadFileArgs(str(big)))
    assert not res.ok and res.value.errno == 27
    assert "open_file" in res.value.message and "tail_file" in res.value.message


def test_write_file_modes(agent, tmp_path):
    path = str(tmp_path / "w")
    assert agent.ok(WriteFileArgs(path, b"one", WriteFileMode.REPLACE, create_perm=0o600)).ok
    assert os.stat(path).st_mode & 0o7777 == 0o600
    assert agent.ok(WriteFileArgs(path, b"two", WriteFileMode.APPEND)).ok
    assert agent.value(ReadFileArgs(path)).data == b"onetwo"
    res = agent.ok(WriteFileArgs(path, b"three", WriteFileMode.EXCLUSIVE))
    assert not res.ok and res.value.errno == 17
    assert agent.value(ReadFileArgs(path)).data == b"onetwo"  # untouched
    assert agent.ok(WriteFileArgs(path, b"3", WriteFileMode.REPLACE)).ok
    assert agent.value(ReadFileArgs(path)).data == b"3"
    new = str(tmp_path / "new")
    assert agent.ok(WriteFileArgs(new, b"", WriteFileMode.EXCLUSIVE)).ok
    assert os.path.getsize(new) == 0
    res = agent.ok(WriteFileArgs(str(tmp_path / "no" / "dir"), b"x"))
    assert not res.ok and res.value.errno == 2


def test_stat(agent, tmp_path):
    f = tmp_path / "s"
    f.write_bytes(b"12345")
    os.chmod(f, 0o4751)
    link = tmp_path / "l"
    link.symlink_to(f)
    md = agent.value(StatArgs(str(f)))
    assert (md.size, md.entry_type.value, md.perm) == (5, "file", 0o4751)
    assert md.mtime_ns == os.stat(f).st_mtime_ns
    assert agent.value(StatArgs(str(tmp_path))).entry_type.value == "directory"
    assert agent.value(StatArgs(str(link))).entry_type.value == "file"
    assert agent.value(StatArgs(str(link), follow_symlinks=False)).entry_type.value == "symlink"
    res = agent.ok(StatArgs(str(tmp_path / "missing")))
    assert not res.ok and res.value.errno == 2


def test_listdir_mkdir_unlink_rename(agent, tmp_path):
    root = tmp_path / "tree"
    deep = root / "a" / "b" / "c"
    assert agent.ok(MkdirArgs(str(deep), parents=True, create_perm=0o700)).ok
    for d in (root, root / "a", deep):
        assert os.stat(d).st_mode & 0o777 == 0o700  # every created level gets the mode
    assert agent.ok(MkdirArgs(str(deep), parents=True)).ok  # already there: fine with parents
    res = agent.ok(MkdirArgs(str(deep)))
    assert not res.ok and res.value.errno == 17
    res = agent.ok(MkdirArgs(str(tmp_path / "x" / "y")))
    assert not res.ok and res.value.errno == 2
    assert agent.ok(MkdirArgs(str(root / "plain"))).ok
    assert os.stat(root / "plain").st_mode & 0o777 == 0o755 & ~_umask()
    (root / "file").write_bytes(b"")
    (root / "link").symlink_to("file")
    entries = {e.name: e.entry_type.value for e in agent.value(ListdirArgs(str(root)))}
    assert entries == {"a": "directory", "plain": "directory", "file": "file", "link": "symlink"}
    res = agent.ok(ListdirArgs(str(root / "missing")))
    assert not res.ok and res.value.errno == 2
    assert agent.ok(RenameArgs(str(root / "file"), str(root / "moved"))).ok
    assert (root / "moved").exists() and not (root / "file").exists()
    res = agent.ok(RenameArgs(str(root / "nope"), str(root / "x")))
    assert not res.ok and res.value.errno == 2
    assert agent.ok(UnlinkArgs(str(root / "moved"))).ok
    assert agent.ok(UnlinkArgs(str(root / "plain"))).ok  # an empty directory
    assert not (root / "plain").exists()
    res = agent.ok(UnlinkArgs(str(root / "a")))  # not empty
    assert not res.ok and res.value.errno == 39
    res = agent.ok(UnlinkArgs(str(root / "missing")))
    assert not res.ok and res.value.errno == 2


def test_rename_wire_field_is_from(agent, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    ch = agent.new_ch()
    agent.send(ch, "rename", {"from": str(a), "to": str(b)})
    env = agent.recv(ch)
    assert env.kind == "rename_result" and env.data.ok and b.exists()


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _special_files(d):
    """One of each kind stat can report, made under d (we run as root: mknod works)."""
    import socket
    import stat as st

    os.mkfifo(d / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    os.mknod(d / "blk", st.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(d / "chr", st.S_IFCHR | 0o600, os.makedev(1, 3))
    return sock


def test_stat_and_listdir_name_every_entry_type(agent, tmp_path):
    sock = _special_files(tmp_path)
    try:
        want = {"fifo": "fifo", "sock": "socket", "blk": "block_device", "chr": "char_device"}
        for name, kind in want.items():
            assert agent.value(StatArgs(str(tmp_path / name))).entry_type.value == kind
        assert agent.value(StatArgs("/dev/null")).entry_type.value == "char_device"
        entries = {e.name: e.entry_type.value for e in agent.value(ListdirArgs(str(tmp_path)))}
        assert entries == want
    finally:
        sock.close()


def test_entry_types_on_the_wire_are_the_references():
    from provium.protocol.types import EntryType

    assert sorted(e.value for e in EntryType) == sorted(
        ["file", "directory", "symlink", "fifo", "socket", "block_device", "char_device", "other"])


def test_large_files_both_ways_and_a_small_op_right_behind(agent, tmp_path):
    # A large request body is filled by the agent's bulk read loop (it must stop at
    # the body's end: the next frame follows at once), and a large reply goes out
    # from its own buffer (a Blob).  Odd sizes check the last piece.
    data = os.urandom((3 << 20) + 4097)
    path = str(tmp_path / "big.bin")
    ch_write, ch_time = agent.new_ch(), agent.new_ch()
    agent.send_raw(encode_frame(Envelope(ch_write, "write_file", WriteFileArgs(path, data)).to_wire())
                   + encode_frame(Envelope(ch_time, "get_time", GetTimeArgs()).to_wire()))
    assert agent.recv(ch_write).data.ok
    assert agent.recv(ch_time).kind == "get_time_result"
    with open(path, "rb") as f:
        assert f.read() == data
    assert agent.value(ReadFileArgs(path)).data == data

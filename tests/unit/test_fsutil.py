"""atomic_write: the one temp-file-and-rename writer the runner, reporters, caches use."""

import os
import stat

import pytest

from provium.fsutil import atomic_write


def test_writes_bytes_text_and_chunks(tmp_path):
    p = tmp_path / "a" / "b" / "out.bin"  # parents are created
    assert atomic_write(p, b"\x00\xff") == p and p.read_bytes() == b"\x00\xff"
    assert atomic_write(str(p), "héllo").read_bytes() == "héllo".encode("utf-8")
    atomic_write(p, iter([b"ab", bytearray(b"cd"), memoryview(b"ef")]))
    assert p.read_bytes() == b"abcdef"
    assert os.listdir(p.parent) == ["out.bin"]  # no temp file left behind


def test_mode(tmp_path):
    p = atomic_write(tmp_path / "img", b"x", mode=0o644)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    q = atomic_write(tmp_path / "private", b"x")
    assert stat.S_IMODE(q.stat().st_mode) == 0o600  # None: the temp file's owner-only bits


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")

    def chunks():
        yield b"half of the new"
        raise KeyboardInterrupt  # any failure, Ctrl-C included

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, chunks())
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]
    with pytest.raises(TypeError):
        atomic_write(p, ["not bytes"])
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_relative_path_lands_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atomic_write("report.xml", "<x/>")
    assert (tmp_path / "report.xml").read_text() == "<x/>"


def test_read_tail_reads_the_end_or_nothing(tmp_path):
    from provium.fsutil import read_tail

    p = tmp_path / "log"
    p.write_bytes(b"0123456789")
    assert read_tail(p, 4) == b"6789"
    assert read_tail(p, 100) == b"0123456789"
    assert read_tail(p, 0) == b""
    assert read_tail(tmp_path / "missing", 10) == b""


def test_atomic_write_can_refuse_to_create_parents(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f", b"x", make_parents=False)
    assert not (tmp_path / "missing").exists()
    assert atomic_write(tmp_path / "f", b"x", 0o640, make_parents=False).read_bytes() == b"x"
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640

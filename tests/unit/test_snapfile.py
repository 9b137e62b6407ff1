"""The snapshot file format: every way a file can be wrong is a clear error naming it."""

import os

import pytest

from provium.vmm import snapfile
from provium.vmm.qemu.argv import QemuConfig, build


def _write(path, ram=b"", state=b"STATE", ram_mode="file", **over):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, ram, 0)
        off = snapfile.align(len(ram)) if ram else 0
        os.pwrite(fd, state, off)
        fields = {"vm_name": "v", "profile": "linux", "backend": "qemu", "memory_bytes": len(ram) or 4096, "cpus": 1,
                      "ram_mode": ram_mode, "ram_size": len(ram), "state_offset": off, "state_length": len(state)}
        fields.update(over)
        meta = snapfile.SnapshotMeta(**fields)
        return snapfile.append_meta(fd, meta, snapfile.align(off + len(state), 8))
    finally:
        os.close(fd)


def test_round_trip(tmp_path):
    p = tmp_path / "s.bin"
    size = _write(p, ram=b"\1" * 8192, extra={"disks": [1]})
    assert size == p.stat().st_size
    m = snapfile.read_meta(p)
    assert (m.vm_name, m.ram_mode, m.ram_size, m.state_offset, m.state_length) == ("v", "file", 8192, 8192, 5)
    assert m.extra == {"disks": [1]}


@pytest.mark.parametrize("damage, phrase", [
    ("missing", "no such file"),
    ("empty", "only 0 bytes: truncated"),
    ("truncated", "no trailer at the end: the file is truncated"),
    ("foreign", "not a provium snapshot"),
    ("zstd", "is zstd-compressed"),
    ("version", "format version 99; this provium reads version 1"),
    ("meta", "metadata is not valid JSON"),
    ("dir", "is a directory"),
])
def test_bad_files_are_named(tmp_path, damage, phrase):
    p = tmp_path / "s.bin"
    size = _write(p, ram=b"\1" * 4096)
    data = p.read_bytes()
    if damage == "missing":
        p.unlink()
    elif damage == "empty":
        p.write_bytes(b"")
    elif damage == "truncated":
        p.write_bytes(data[: size // 2])
    elif damage == "foreign":
        p.write_bytes(b"\x7fELF" + b"\0" * 100)
    elif damage == "zstd":
        p.write_bytes(snapfile.ZSTD_MAGIC + b"\0" * 100)
    elif damage == "version":
        p.write_bytes(data[:-24] + (99).to_bytes(4, "little") + data[-20:])
    elif damage == "meta":
        moff = int.from_bytes(data[-16:-8], "little")
        p.write_bytes(data[:moff] + b"X" + data[moff + 1:])
    elif damage == "dir":
        p.unlink()
        p.mkdir()
    with pytest.raises(snapfile.SnapshotFileError) as ei:
        snapfile.read_meta(p)
    assert str(p) in str(ei.value) and phrase in str(ei.value)


def test_overlapping_sections_refused(tmp_path):
    p = tmp_path / "s.bin"
    _write(p, ram=b"\1" * 4096, state_offset=100)
    with pytest.raises(snapfile.SnapshotFileError, match="overlap"):
        snapfile.read_meta(p)


def test_ram_file_argv(tmp_path):
    cfg = QemuConfig(qemu="q", machine="q35", accel="tcg", memory_bytes=256 << 20, cpus=1, kernel=tmp_path / "k",
                     initrd=None, cmdline="c", scratch=tmp_path, ram_path=tmp_path / "r,am", ram_share=False,
                     incoming=True)
    argv = build(cfg)
    assert argv[argv.index("-M") + 1] == "q35,accel=tcg,memory-backend=ram0"
    assert f"memory-backend-file,id=ram0,size=256M,mem-path={tmp_path}/r,,am,share=off" in argv
    assert argv[-2:] == ["-incoming", "defer"]
    plain = build(QemuConfig(qemu="q", machine="q35", accel="tcg", memory_bytes=256 << 20, cpus=1,
                             kernel=tmp_path / "k", initrd=None, cmdline="c", scratch=tmp_path))
    assert "-incoming" not in plain and not any("memory-backend" in a for a in plain)


def test_sparse_copy_keeps_holes(tmp_path):
    from provium.vmm.qemu.ram import copy_data

    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(16 << 20)
        f.seek(8 << 20)
        f.write(b"x" * 4096)
    dst = tmp_path / "dst"
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT)
    os.ftruncate(fd, 16 << 20)
    n = copy_data(src, fd, 16 << 20)
    os.close(fd)
    assert n >= 4096 and dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks * 512 < 1 << 20

"""The newc cpio writer: byte layout, determinism, and agreement with GNU cpio."""

import gzip
import shutil
import stat
import subprocess

import pytest

from provium.image.cpio import CpioError, CpioWriter, gzip_bytes, norm_path, parse


def test_header_layout_is_newc():
    w = CpioWriter()
    w.add_file("a", b"xyz", 0o640)
    data = bytes(w)
    assert data[:6] == b"070701"
    fields = [int(data[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
    ino, mode, uid, gid, nlink, mtime, size, _, _, _, _, namesize, check = fields
    assert (mode, uid, gid, nlink, mtime, size, namesize, check) == (stat.S_IFREG | 0o640, 0, 0, 1, 0, 3, 2, 0)
    # name "a\0" after the 110-byte header, padded to 4 -> data at 112
    assert data[110:112] == b"a\0"
    assert data[112:115] == b"xyz"
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data


def test_parents_come_first_and_round_trip():
    w = CpioWriter()
    w.add_file("/etc/x/y.conf", b"1")
    w.add_symlink("bin/sh", "/bin/busybox")
    w.add_chardev("dev/console", 5, 1)
    entries = parse(bytes(w))
    names = [n for n, _, _ in entries]
    assert names == ["etc", "etc/x", "etc/x/y.conf", "bin", "bin/sh", "dev", "dev/console"]
    modes = {n: m for n, m, _ in entries}
    assert stat.S_ISDIR(modes["etc"]) and stat.S_IMODE(modes["etc"]) == 0o755
    assert stat.S_ISLNK(modes["bin/sh"])
    assert stat.S_ISCHR(modes["dev/console"])
    assert dict((n, d) for n, _, d in entries)["bin/sh"] == b"/bin/busybox"


def test_deterministic_output():
    def build():
        w = CpioWriter()
        w.add_file("z", b"1" * 1000, 0o755)
        w.add_dir("d", 0o700)
        return gzip_bytes(bytes(w))

    assert build() == build()


@pytest.mark.parametrize("bad, why", [
    ("a/../b", "may not contain"), ("./a", "may not contain"), ("a/.", "may not contain"),
    ("/", "names no file"), ("", "names no file"), ("//", "names no file"),
])
def test_bad_paths_are_refused(bad, why):
    with pytest.raises(CpioError, match=why):
        norm_path(bad)


def test_duplicate_file_is_refused():
    w = CpioWriter()
    w.add_file("a", b"")
    with pytest.raises(CpioError, match="added twice"):
        w.add_file("/a", b"")


@pytest.mark.skipif(not shutil.which("cpio"), reason="GNU cpio not installed")
def test_gnu_cpio_reads_our_archive(tmp_path):
    w = CpioWriter()
    w.add_file("top/file.txt", b"hello\n", 0o600)
    w.add_symlink("top/link", "file.txt")
    (tmp_path / "a.cpio.gz").write_bytes(gzip_bytes(bytes(w)))
    out = tmp_path / "out"
    out.mkdir()
    raw = gzip.decompress((tmp_path / "a.cpio.gz").read_bytes())
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=raw, cwd=out, check=True)
    assert (out / "top" / "file.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE((out / "top" / "file.txt").stat().st_mode) == 0o600
    assert (out / "top" / "link").is_symlink() and (out / "top" / "link").readlink().name == "file.txt"
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True).stdout.split()
    assert listing == [b"top", b"top/file.txt", b"top/link"]


def _archive(**files: bytes) -> bytes:
    w = CpioWriter()
    for name, data in files.items():
        w.add_file(name, data)
    return bytes(w)


def test_concatenated_parts_start_4_byte_aligned_and_read_back_in_order(tmp_path):
    from provium.image.cache import concat_files
    from provium.image.cpio import read_initrd

    gz = gzip_bytes(_archive(a=b"1", b=b"x" * 5))
    assert len(gz) % 4  # so the next part needs padding (else this test shows nothing)
    raw = _archive(a=b"2", c=b"3")
    out = concat_files(tmp_path / "img", [gz, raw, gzip_bytes(_archive(d=b"4"))])
    data = out.read_bytes()
    start = data.index(b"070701", len(gz))
    assert start % 4 == 0 and set(data[len(gz):start]) == {0}
    entries = read_initrd(data)
    assert [n for n, _, _ in entries] == ["a", "b", "a", "c", "d"]
    assert dict((n, d) for n, _, d in entries)["a"] == b"2"  # later archives win, as in the kernel


def test_read_initrd_refuses_an_unaligned_uncompressed_archive():
    from provium.image.cpio import read_initrd

    with pytest.raises(CpioError, match="unaligned offset 1"):
        read_initrd(b"\0" + _archive(a=b"1"))
    with pytest.raises(CpioError, match="neither an archive nor padding at offset 0"):
        read_initrd(b"junk")

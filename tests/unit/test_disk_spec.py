"""Disk declarations: one parser for provium.toml, boot options and attach_disk."""

import pytest

from provium.config import ConfigError, load
from provium.disk.spec import parse_disk
from provium.host.errors import ArgumentError


def test_profile_disks_from_toml(tmp_path):
    (tmp_path / "provium.toml").write_text('''
[profiles.db]
kernel = "k"
cmdline = "console=ttyS0"
disks = [{ path = "data.img" }, { id = "s", scratch = "2M", mediated = true }, { id = "t", template = "t.img", readonly = true }]
''')
    p = load(tmp_path / "provium.toml").profile("db")
    assert [(d.id, d.source) for d in p.disks] == [("disk0", "path"), ("s", "scratch"), ("t", "template")]
    assert p.disks[1].scratch == 2 << 20 and p.disks[1].mediated and p.disks[2].readonly


def test_profile_disk_errors_name_the_file(tmp_path):
    (tmp_path / "provium.toml").write_text('''
[profiles.db]
kernel = "k"
cmdline = "x"
disks = [{ scratch = "1M", path = "a.img" }]
''')
    with pytest.raises(ConfigError) as ei:
        load(tmp_path / "provium.toml")
    assert "profile `db`: disks[1]: disk `disk0` needs exactly one source" in str(ei.value)


@pytest.mark.parametrize("table, needle", [
    ({"scratch": 0}, "size must be 1 byte .. 1 PiB, got 0"),
    ({"scratch": "1.5G"}, "cannot parse size `1.5G`"),
    ({"scratch": True}, "expected bytes as an integer or a size string"),
    ({"path": 5}, "`path` must be a string, got number"),
    ({"path": "a\0b"}, "contains a NUL byte"),
    ({"path": "/a", "mediated": "yes"}, "`mediated` must be a boolean, got string"),
    ({"path": "/a", "id": ""}, "`id` must be a non-empty string"),
    ("x", "expected a {id=, path= | scratch= | template=[, readonly=][, mediated=]} table, got string"),
])
def test_bad_tables(table, needle):
    with pytest.raises(ArgumentError) as ei:
        parse_disk(table, "boot_opts.disks[1]", "boot0", ArgumentError)
    assert needle in str(ei.value)


def test_sizes():
    assert parse_disk({"scratch": "1M"}, "w", "d", ArgumentError).scratch == 1 << 20
    assert parse_disk({"scratch": 4096}, "w", "d", ArgumentError).scratch == 4096
    assert parse_disk({"scratch": "64KiB"}, "w", "d", ArgumentError).scratch == 64 << 10


def test_stale_disk_directories_are_swept(monkeypatch):
    """A run killed with SIGKILL leaves provium-disks-<pid>; the next run removes it."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from provium.disk import image

    tmp_path = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))  # short: socket paths live there

    p = subprocess.Popen(["true"])
    p.wait()  # a pid that no longer runs
    stale = tmp_path / f"provium-disks-{p.pid}"
    (stale / "1").mkdir(parents=True)
    (stale / "1" / "0.img").write_bytes(b"x")
    monkeypatch.setattr(image.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(image, "_root", None)
    d = image.vm_dir()
    assert not stale.exists() and d.is_dir()
    image.remove_dir(d)
    assert not d.parent.exists()  # the last directory takes the root with it
    shutil.rmtree(tmp_path)

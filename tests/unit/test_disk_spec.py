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

"""The `debian` profile without booting: config keys, image recipe pieces, cache keys, root disk."""

import gzip
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from provium import config
from provium.config import ConfigError, builtin_debian_profile
from provium.host import rootdisk, systemd
from provium.host.errors import ArgumentError
from provium.image import debian
from provium.image.boot import FILES_DIR, files_segment
from provium.image.cpio import parse
from provium.vmm.base import DiskSpec
from provium.vmm.qemu import argv as argv_mod


def _load(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "provium.toml"
    p.write_text(text)
    return config.load(p, explicit=True)


def test_debian_is_built_in_beside_linux(tmp_path):
    for cfg in (config.load(None), _load(tmp_path, "")):
        d = cfg.profile("debian")
        assert d.builtin and d.distro == "debian" and d.packages == []
        assert d.agent_boot_timeout == config.DEBIAN_BOOT_TIMEOUT
        assert cfg.profile("linux").distro is None


def test_a_profile_adds_packages_sorted_and_deduplicated(tmp_path):
    cfg = _load(tmp_path, '[profiles.web]\ndistro = "debian"\npackages = ["nginx", "curl", "nginx"]\nmemory = "1G"\n')
    web = cfg.profile("web")
    assert web.distro == "debian" and web.packages == ["curl", "nginx"] and web.memory == 1 << 30
    assert web.agent_boot_timeout == config.DEBIAN_BOOT_TIMEOUT


@pytest.mark.parametrize("body, words", [
    ('packages = ["nginx"]', "`packages` needs `distro = \"debian\"`"),
    ('distro = "fedora"', "distro 'fedora' is not supported (valid: debian)"),
    ('distro = "debian"\nkernel = "/boot/vmlinuz"', "`kernel` cannot be set with `distro = \"debian\"`"),
    ('distro = "debian"\npackages = "nginx"', "`packages` must be a list of Debian package names, got str"),
    ('distro = "debian"\npackages = ["nginx; rm -rf /"]', "is not a Debian package name"),
    ('distro = "debian"\npackages = ["-o"]', "is not a Debian package name"),
])
def test_bad_distro_keys_are_named(tmp_path, body, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, f"[profiles.web]\n{body}\n")
    assert "profile `web`" in str(e.value) and words in str(e.value)


def test_image_key_follows_packages_and_recipe(monkeypatch):
    k = debian.HostKernel(Path(debian.__file__), "6.1.0-test")  # any readable file stands in for vmlinuz
    monkeypatch.setattr(debian.initramfs, "find_busybox", lambda: Path(debian.__file__))
    base, web = debian.image_key([], k), debian.image_key(["nginx"], k)
    assert base != web and debian.image_key([], k) == base
    assert debian.rootfs_key(["nginx"]) != debian.rootfs_key([])
    monkeypatch.setattr(debian, "RECIPE_VERSION", debian.RECIPE_VERSION + 1)
    assert debian.image_key([], k) != base
    assert debian.image_key([], debian.HostKernel(k.path, "6.1.0-other")) != debian.image_key([], k)


def test_agent_unit_runs_the_guests_python_early():
    unit = debian.agent_unit()
    assert "DefaultDependencies=no" in unit and "Before=sysinit.target" in unit
    assert "WantedBy=sysinit.target" in unit and "KillMode=process" in unit
    exec_line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    argv = shlex.split(exec_line[len("ExecStart="):].replace("$$", "$").replace("%%", "%"))
    assert argv[:2] == ["/usr/bin/python3", "-I"]
    assert "provium.agent.guest:main" in argv[-1] and debian.GUEST_AGENT_DIR in argv[-1]
    env = next(l for l in unit.splitlines() if l.startswith("Environment="))
    assert "PROVIUM_AGENT_EXEC=" in env and "provium.agent.__main__:main" in env


def test_agent_sources_are_what_the_agent_imports():
    rels = [r for r, _ in debian._agent_sources()]
    assert "provium/__init__.py" in rels and "provium/errors.py" in rels and "provium_boot.py" in rels
    assert "provium/agent/guest.py" in rels and "provium/protocol/framing.py" in rels
    assert not any(r.startswith(("provium/host/", "provium/image/")) for r in rels)


def test_stage1_init_finds_root_by_serial_and_hands_over_to_systemd():
    init = debian.INIT.format(modules="virtio virtio_blk", serial="rootfs")
    assert "exec switch_root /newroot /sbin/init" in init and "serial=rootfs" in init
    assert "/sys/block/vd*" in init and f"/{FILES_DIR}" in init


def test_usr_path_follows_merged_usr(tmp_path):
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert debian._usr_path(tmp_path, "lib/modules/x") == tmp_path / "usr/lib/modules/x"
    assert debian._usr_path(tmp_path, "etc/x") == tmp_path / "etc/x"


def test_distro_boot_files_land_under_the_files_dir():
    @dataclass
    class F:
        path: str
        content: bytes
        mode: int = 0o644

    names = {e[0] for e in parse(gzip.decompress(files_segment([F("/etc/app.conf", b"x")], FILES_DIR)))}
    assert f"{FILES_DIR}/etc/app.conf" in names


def test_qcow2_root_disk_attaches_as_qcow2():
    d = DiskSpec(id="rootfs", image="/tmp/x/0.qcow2", format="qcow2", backing="/cache/debian.img")
    assert d.source == "overlay"
    node = argv_mod.blockdev(d, "disk0")
    assert node["driver"] == "qcow2" and node["file"] == {"driver": "file", "filename": "/tmp/x/0.qcow2"}


def test_backing_file_is_read_from_the_qcow2_header(tmp_path):
    p = tmp_path / "ov.qcow2"
    name = b"/cache/images/debian-abc.img"
    head = b"QFI\xfb" + struct.pack(">I", 3) + struct.pack(">QI", 104, len(name))
    p.write_bytes(head.ljust(104, b"\0") + name)
    assert rootdisk.backing_file(p) == name.decode()
    (tmp_path / "raw.img").write_bytes(b"\0" * 512)
    assert rootdisk.backing_file(tmp_path / "raw.img") is None


@pytest.mark.parametrize("unit", ["", "a b", "x;reboot", 5, None, "$(id)"])
def test_unit_names_are_checked(unit):
    with pytest.raises(ArgumentError) as e:
        systemd._unit("vm:wait_unit", unit)
    assert "vm:wait_unit: unit must be a systemd unit name" in str(e.value)


def test_builtin_debian_profile_is_fresh_each_time():
    a, b = builtin_debian_profile(), builtin_debian_profile()
    a.packages.append("x")
    assert b.packages == []

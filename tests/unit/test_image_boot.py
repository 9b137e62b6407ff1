"""Boot composition: cmdline rules, the per-boot files segment, profile paths, merged initrds."""

import gzip
import stat
from dataclasses import dataclass

import pytest

from provium.config import Profile, builtin_linux_profile
from provium.image import ImageError, agent_initrd, boot_cmdline, files_segment, prepare_profile
from provium.image.cpio import parse, read_initrd


@dataclass
class F:
    path: object
    content: bytes = b""
    mode: object = 0o644


def test_cmdline_gets_rdinit_and_console():
    p = builtin_linux_profile()
    assert boot_cmdline(p, None, "", inject_agent=True) == "console=ttyS0 quiet panic=-1 rdinit=/sbin/provium-agent"


def test_cmdline_override_and_append():
    p = Profile(name="x", cmdline="a b")
    assert boot_cmdline(p, "root=/dev/vda", "loglevel=7  x=1", inject_agent=False) == \
        "root=/dev/vda loglevel=7 x=1 console=ttyS0"


def test_cmdline_keeps_a_given_console_and_our_rdinit_once():
    p = Profile(name="x", cmdline="console=ttyS0,115200 rdinit=/sbin/provium-agent")
    assert boot_cmdline(p, None, "", inject_agent=True) == "console=ttyS0,115200 rdinit=/sbin/provium-agent"


def test_conflicting_rdinit_is_an_actionable_error():
    p = Profile(name="peios", cmdline="rdinit=/init quiet")
    with pytest.raises(ImageError) as e:
        boot_cmdline(p, None, "", inject_agent=True)
    msg = str(e.value)
    assert "profile `peios`" in msg and "rdinit=/init" in msg and "inject_agent = false" in msg
    # without injection the user's rdinit is theirs
    assert boot_cmdline(p, None, "", inject_agent=False) == "rdinit=/init quiet console=ttyS0"


def test_files_segment_layout():
    seg = files_segment([F("/etc/app/conf", b"x=1\n"), F("opt/run.sh", b"#!/bin/sh\n", 0o755), F("top", b"t")])
    raw = gzip.decompress(seg)
    entries = parse(raw)
    names = [n for n, _, _ in entries]
    # ancestors first (sorted, 0755), then the files in the order given
    assert names == ["etc", "etc/app", "opt", "etc/app/conf", "opt/run.sh", "top"]
    modes = {n: m for n, m, _ in entries}
    assert modes["etc"] == stat.S_IFDIR | 0o755
    assert modes["etc/app/conf"] == stat.S_IFREG | 0o644
    assert modes["opt/run.sh"] == stat.S_IFREG | 0o755
    assert dict((n, d) for n, _, d in entries)["etc/app/conf"] == b"x=1\n"
    assert seg[:2] == b"\x1f\x8b"


def test_files_segment_is_deterministic_and_last_write_wins():
    a = files_segment([F("a", b"1"), F("a", b"2")])
    assert a == files_segment([F("a", b"1"), F("a", b"2")])
    assert dict((n, d) for n, _, d in parse(gzip.decompress(a)))["a"] == b"2"


@pytest.mark.parametrize("path, why", [
    ("a/../etc/passwd", "may not contain `.` or `..`"),
    ("./x", "may not contain `.` or `..`"),
    ("/", "names no file"),
    (7, "expected a string"),
])
def test_files_segment_rejects_bad_paths(path, why):
    with pytest.raises(ImageError, match=why) as e:
        files_segment([F(path, b"")])
    assert str(e.value).startswith("boot_opts.files: path")


def test_files_segment_rejects_bad_modes():
    with pytest.raises(ImageError, match="must be an integer permission mask"):
        files_segment([F("a", b"", 0o10000)])
    with pytest.raises(ImageError, match="must be an integer permission mask"):
        files_segment([F("a", b"", "755")])


def test_files_segment_rejects_file_that_is_also_a_directory():
    with pytest.raises(ImageError, match="both a file and the directory"):
        files_segment([F("a", b""), F("a/b", b"")])


def test_profile_paths_are_checked(tmp_path):
    p = Profile(name="mine", kernel="bzImage", initrd="missing.cpio", cmdline="x", base_dir=str(tmp_path))
    with pytest.raises(ImageError, match=r"profile `mine`: kernel `.*bzImage` does not exist"):
        prepare_profile(p)
    (tmp_path / "bzImage").write_bytes(b"k")
    with pytest.raises(ImageError, match=r"initrd `.*missing.cpio` does not exist"):
        prepare_profile(p)
    (tmp_path / "missing.cpio").write_bytes(b"i")
    assert prepare_profile(p) == (tmp_path / "bzImage", tmp_path / "missing.cpio")
    built = Profile(name="dyn", kernel="out/bz", cmdline="x", build="make", base_dir=str(tmp_path))
    with pytest.raises(ImageError, match="provium prepare"):
        prepare_profile(built)


def test_agent_initrd_appends_the_given_overlay(tmp_path):
    initrd = tmp_path / "user.cpio.gz"
    initrd.write_bytes(b"USER")
    ov = tmp_path / "overlay.cpio.gz"
    ov.write_bytes(b"OVERLAY")
    p = Profile(name="x", cmdline="x", agent_overlay_path=str(ov), base_dir=str(tmp_path))
    merged = agent_initrd(p, initrd, cache_dir=tmp_path / "cache")
    assert merged.read_bytes() == b"USEROVERLAY\0"  # each part starts 4-byte aligned
    assert agent_initrd(p, initrd, cache_dir=tmp_path / "cache") == merged  # cached by content
    initrd.write_bytes(b"USER2")
    again = agent_initrd(p, initrd, cache_dir=tmp_path / "cache")
    assert again != merged and again.read_bytes() == b"USER2\0\0\0OVERLAY\0"
    assert agent_initrd(p, None, cache_dir=tmp_path / "cache") == ov  # overlay alone
    missing = Profile(name="y", cmdline="x", agent_overlay_path="nope.gz", base_dir=str(tmp_path))
    with pytest.raises(ImageError, match="agent_overlay_path"):
        agent_initrd(missing, initrd, cache_dir=tmp_path / "cache")


def test_unused_images_are_pruned_when_a_new_one_is_built(tmp_path):
    import os
    import time

    from provium.image import cache

    d = tmp_path / "images"
    d.mkdir()
    old, recent, other = d / "merged-old", d / "merged-recent", d / "agent-overlay-old"
    for p in (old, recent, other):
        p.write_bytes(b"x")
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    os.utime(other, (week_ago, week_ago))
    new = d / "merged-new"
    new.write_bytes(b"y")
    cache.prune(d, "merged-", keep=new)
    assert not old.exists() and recent.exists() and new.exists() and other.exists()
    os.utime(recent, (week_ago, week_ago))
    cache.use(recent)  # a cache hit counts as a use
    cache.prune(d, "merged-", keep=new)
    assert recent.exists()


def test_boot_marker_is_for_profiles_without_the_agent(tmp_path):
    from provium.config import ConfigError, load
    f = tmp_path / "provium.toml"
    f.write_text('[profiles.p]\nkernel = "k"\ninject_agent = false\nboot_marker = "ready"\n')
    assert load(f, explicit=True).profiles["p"].boot_marker == "ready"
    for body, msg in (('boot_marker = "ready"\n', "only for `inject_agent = false`"),
                      ('inject_agent = false\nboot_marker = ""\n', "an empty string")):
        f.write_text('[profiles.p]\nkernel = "k"\n' + body)
        with pytest.raises(ConfigError, match=msg):
            load(f, explicit=True)


def test_empty_initrd_with_a_host_kernel_brings_the_agent_modules(tmp_path):
    from provium.config import Profile
    from provium.image.boot import prepare_profile
    from provium.image.kernel import find_kernel
    k = find_kernel()
    kernel, initrd = prepare_profile(Profile(name="bare", kernel=str(k.path)), tmp_path)
    assert kernel == k.path and initrd is not None and initrd.name.startswith("agent-modules-")
    names = [e[0] for e in read_initrd(initrd.read_bytes())]
    assert "lib/modules/provium/virtio_console.ko" in names and "lib/modules/provium/order" in names
    # another kernel: nothing added (it must have the drivers built in, docs/guests.md)
    other = tmp_path / "bzImage"
    other.write_bytes(b"x")
    assert prepare_profile(Profile(name="own", kernel=str(other)), tmp_path) == (other, None)
    assert prepare_profile(Profile(name="own", kernel=str(k.path), inject_agent=False), tmp_path) == (k.path, None)


def test_guests_doc_shows_the_example_profile_verbatim():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "guests.md").read_text()
    for name, lang in (("provium.toml", "toml"), ("build.sh", "sh")):
        text = (root / "examples" / "custom-profile" / name).read_text()
        assert f"```{lang}\n{text}```" in doc, name

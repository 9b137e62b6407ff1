"""Host files named by the user: reports, rerun state, config and discovery never damage the host."""

from __future__ import annotations

import json
import os
import stat
import threading
import xml.etree.ElementTree as ET

import pytest

from provium import config as configmod
from provium import hostfiles
from provium.cli import rerun
from provium.events.reporters import write_junit
from provium.scheduler import discovery
from provium.scheduler.results import FileResult, TestOutcome

ROOT = os.geteuid() == 0


def results(name="t", message=None):
    return [FileResult(path="a/b.test.lua", tests=[TestOutcome(name, "failed", message=message)])]


def _reader(path, into):
    with open(path, "rb") as f:
        into.append(f.read())


def test_junit_into_a_fifo_writes_into_it_and_keeps_it(tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    t = threading.Thread(target=_reader, args=(fifo, got))
    t.start()
    write_junit(str(fifo), results(), elapsed=1.0)
    t.join(5)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not replaced by a regular file
    assert got and b"<testsuites" in got[0]


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_junit_into_a_character_device_keeps_the_device(tmp_path):
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    write_junit(str(dev), results(), elapsed=1.0)
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_junit_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.xml"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.xml"
    link.symlink_to(target)
    write_junit(str(link), results(), elapsed=1.0)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert ET.parse(target).getroot().tag == "testsuites"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # its mode is kept


@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_junit_over_another_users_file_is_written_in_place(tmp_path):
    other = tmp_path / "theirs.xml"
    other.write_text("old")
    os.chown(other, 65534, 65534)
    ino = os.stat(other).st_ino
    write_junit(str(other), results(), elapsed=1.0)
    st = os.stat(other)
    assert st.st_ino == ino and st.st_uid == 65534  # same file, same owner: never replaced
    assert b"<testsuites" in other.read_bytes()


def test_report_paths_never_create_directories(tmp_path):
    with pytest.raises(hostfiles.HostFileError, match="does not exist"):
        write_junit(str(tmp_path / "nonexistent" / "dir" / "j.xml"), results(), elapsed=1.0)
    assert not (tmp_path / "nonexistent").exists()


def test_junit_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_junit(str(tmp_path / "j.xml"), results(), elapsed=1.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "j.xml").st_mode) == 0o644


def test_junit_is_valid_xml_with_characters_xml_forbids(tmp_path):
    path = tmp_path / "j.xml"
    write_junit(str(path), results(name="a\ufffeb\uffffc\x01", message="m\ud800\ufffe"), elapsed=1.0)
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case.get("name") == "a\ufffdb\ufffdc\ufffd"


def test_rerun_state_read_is_bounded_and_regular_only(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(rerun.MAX_STATE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(hostfiles.HostFileError, match="larger than"):
        rerun.load(big)
    with pytest.raises(hostfiles.HostFileError, match="character device"):
        rerun.load(type(big)("/dev/zero"))
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    with pytest.raises(hostfiles.HostFileError, match="FIFO"):
        rerun.load(fifo)  # returns at once: opened non-blocking


def test_rerun_state_symlink_and_fifo_are_kept(tmp_path, monkeypatch):
    target = tmp_path / "real.json"
    target.write_text("[]")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    monkeypatch.setenv("PROVIUM_RERUN_STATE", str(link))
    a = tmp_path / "a.test.lua"
    a.write_text("")
    rerun.update([FileResult(path=str(a), tests=[TestOutcome("t", "failed")])])
    assert link.is_symlink() and json.loads(target.read_text()) == [str(a.resolve())]
    rerun.update([FileResult(path=str(a), tests=[TestOutcome("t", "passed")])])
    assert link.is_symlink() and json.loads(target.read_text()) == []  # emptied, the link kept


def test_discovery_skips_fifos_and_takes_undecodable_names(tmp_path):
    (tmp_path / "ok.test.lua").write_text("")
    os.mkfifo(tmp_path / "pipe.test.lua")
    bad = os.path.join(os.fsencode(tmp_path), b"bad\xff.test.lua")
    open(bad, "wb").close()
    notices: list[str] = []
    found = discovery.discover([str(tmp_path)], notices=notices)
    # a name that is not UTF-8 is run (it was skipped): held as Python holds it, so it opens
    assert [os.path.basename(d.path) for d in found] == [os.fsdecode(b"bad\xff.test.lua"), "ok.test.lua"]
    assert os.path.exists(found[0].path)
    assert discovery.printable(found[0].path) == os.path.join(str(tmp_path), "bad\\xff.test.lua")
    assert notices and all("pipe.test.lua" in n and "not a regular file" in n for n in notices)
    with pytest.raises(discovery.DiscoveryError, match="not a regular file"):
        discovery.discover([str(tmp_path / "pipe.test.lua")])
    assert [d.path for d in discovery.discover([os.fsdecode(bad)])] == [os.fsdecode(bad)]


def test_discovery_runs_each_real_file_once(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ok.test.lua").write_text("")
    monkeypatch.chdir(tmp_path)
    found = discovery.discover([".", "sub/ok.test.lua", "./sub/ok.test.lua", "sub"])
    assert [d.path for d in found] == ["sub/ok.test.lua"]
    # a filter drops the direct paths first, so the one found under a root is the one kept
    assert [d.path for d in discovery.discover(["sub/ok.test.lua", "."], filter="ok")] == ["sub/ok.test.lua"]


def test_config_fifo_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "provium.toml")
    with pytest.raises(configmod.ConfigError, match="FIFO"):
        configmod.load(tmp_path / "provium.toml")


@pytest.mark.parametrize("text, key", [
    ("[provium]\nrots = ['t']\n", "rots"),
    ("[profiles.k]\nkernel = 'k'\ncmdline = 'x'\nmemroy = '1G'\n", "memroy"),
    ("[profiles.k]\nkernal = 'k'\n", "kernal"),  # named, not reported as "empty cmdline"
])
def test_config_unknown_keys_are_errors_naming_them(tmp_path, text, key):
    (tmp_path / "provium.toml").write_text(text)
    with pytest.raises(configmod.ConfigError, match=f"unknown key `{key}` \\(valid: "):
        configmod.load(tmp_path / "provium.toml")


@pytest.mark.parametrize("text, named", [
    ("[provum]\nroots = ['t']\n", "[provum]"),  # a typo of [provium]: its roots were silently lost
    ("[foo]\nx = 1\n", "[foo]"),
    ("[profile.k]\nkernel = 'k'\n", "[profile] (did you mean [profiles.NAME]?)"),
    ("title = 'x'\n[provium]\n", "`title`"),
])
def test_config_unknown_top_level_tables_are_errors_naming_them(tmp_path, text, named):
    (tmp_path / "provium.toml").write_text(text)
    with pytest.raises(configmod.ConfigError) as info:
        configmod.load(tmp_path / "provium.toml")
    assert f"unknown top-level table {named} (valid: [provium], [profiles], [profiles.NAME])" in str(info.value)


def test_config_found_upward_up_to_the_project_top(tmp_path, monkeypatch):
    (tmp_path / "proj" / "a" / "b").mkdir(parents=True)
    (tmp_path / "proj" / ".git").mkdir()
    (tmp_path / "proj" / "provium.toml").write_text("[provium]\nroots = ['tests']\n")
    monkeypatch.chdir(tmp_path / "proj" / "a" / "b")
    found = configmod.find_config()
    assert found is not None and found.resolve() == (tmp_path / "proj" / "provium.toml")
    cfg = configmod.load(found)
    assert cfg.roots == [str(tmp_path / "proj" / "tests")]
    (tmp_path / "provium.toml").write_text("")  # above the project's top: never used
    (tmp_path / "proj" / "provium.toml").unlink()
    assert configmod.find_config() is None

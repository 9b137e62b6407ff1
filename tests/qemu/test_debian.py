"""The built-in `debian` guest on real QEMU: systemd, the guest's own userland, packages,
unit helpers, per-VM copy-on-write roots over a pristine base, snapshots.

One `debian` VM is shared by the module (a TCG boot of a systemd guest costs 15-50 s
here), plus one VM of a profile with `packages = ["nginx"]` and one more plain VM
for the isolation check.  The images come from the cache (`make test` runs
`provium prepare debian` first); a cold cache builds them on first use (minutes).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from qemu_util import factory_for, needs_qemu

from provium import vmm
from provium.config import load
from provium.host import Session
from provium.host.systemd import NoSystemd, UnitFailed, UnitNotFound, UnitTimeout
from provium.image import debian

pytestmark = [pytest.mark.qemu, needs_qemu]

TOML = """
[profiles.web]
distro = "debian"
packages = ["nginx"]
"""


def content_digest(path: Path) -> str:
    """sha256 of the image's non-zero 64 KiB blocks and their offsets, read through its data
    extents (how the filesystem splits data from holes may change once it has written the
    file back; the content may not)."""
    h = hashlib.sha256()
    size = os.stat(path).st_size
    block = 64 << 10
    with open(path, "rb") as f:
        fd, off = f.fileno(), 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            pos = data - data % block
            f.seek(pos)
            while pos < hole:
                chunk = f.read(block)
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    h.update(pos.to_bytes(8, "little") + chunk)
                pos += len(chunk)
            off = max(hole, pos)
    return h.hexdigest()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    p = tmp_path_factory.mktemp("debcfg") / "provium.toml"
    p.write_text(TOML)
    return load(p, explicit=True)


@pytest.fixture(scope="module")
def session(cfg):
    with Session(vmm.create("qemu"), cfg) as s:
        yield s


@pytest.fixture(scope="module")
def base_image(session):
    path = debian.ensure([], session.config.cache_dir)
    before = content_digest(path)
    yield path, before


@pytest.fixture(scope="module")
def debs(session, base_image):
    """The module's VMs; shuts them all down at the end."""
    with factory_for(session) as factory:
        yield factory


@pytest.fixture
def deb(debs):
    """The shared debian VM; a fresh one if an earlier test (the power button) ended it,
    so no test depends on running before or after another."""
    vm = debs.shared("deb_one", "debian")
    vm.wait_unit("multi-user.target")
    return vm


def test_systemd_runs_the_guest(deb):
    r = deb.run("systemctl is-system-running")
    assert r.stdout.decode().strip() == "running", deb.run("systemctl --failed --no-legend").stdout
    assert deb.run("readlink /proc/1/exe").stdout.strip() == b"/usr/lib/systemd/systemd"
    assert deb.run("systemctl is-active provium-agent").stdout.strip() == b"active"


def test_the_guests_own_python_bash_and_coreutils(deb):
    r = deb.run(["/usr/bin/python3", "-c", "import sys, msgpack; print(sys.version_info[:2], msgpack.version[:2])"])
    assert r.exit_code == 0 and r.stdout.startswith(b"(3, 11)"), r.stderr
    assert deb.run(["bash", "-c", "a=(x y z); echo ${#a[@]} $BASH_VERSION"]).stdout.startswith(b"3 5.")
    assert b"GNU coreutils" in deb.run("ls --version").stdout
    assert deb.run("cat /etc/debian_version").stdout.startswith(b"12.")


def test_hostname_and_hosts_follow_the_vm_name(deb):
    assert deb.run("hostname").stdout == b"deb-one\n"
    assert b"127.0.1.1\tdeb-one" in deb.read_file("/etc/hosts")


def test_a_pushed_host_binary_runs_with_the_guests_libc(deb):
    deb.write_file("/usr/local/bin/host-ls", Path("/usr/bin/ls").read_bytes(), {"perm": 0o755})
    r = deb.run("/usr/local/bin/host-ls --version")
    assert r.exit_code == 0 and b"GNU coreutils" in r.stdout, r.stderr


def test_kernel_modules_are_there_for_modprobe(deb):
    assert deb.run("modprobe -n -v virtiofs").exit_code == 0
    release = deb.run("uname -r").stdout.decode().strip()
    assert deb.run(f"test -e /lib/modules/{release}/modules.dep").exit_code == 0


def test_a_failing_unit_is_reported_with_its_journal(deb):
    deb.write_file("/etc/systemd/system/broken.service",
                   b"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo broken-unit-says-why >&2; exit 3'\n")
    # oneshot: `activating` until the command ends, then `failed`; a simple service is
    # `active` as soon as it starts, and the wait could see that before the exit.
    deb.run("systemctl daemon-reload && systemctl start --no-block broken.service")
    with pytest.raises(UnitFailed) as e:
        deb.wait_unit("broken", timeout=60)
    text = str(e.value)
    assert "unit `broken` of vm `deb_one` failed (result: exit-code)" in text
    assert "broken-unit-says-why" in text
    assert "broken-unit-says-why" in deb.journal("broken", lines=20)


def test_unknown_unit_and_timeout_are_told_apart(deb):
    with pytest.raises(UnitNotFound, match="has no unit `no-such-thing`"):
        deb.wait_unit("no-such-thing")
    deb.write_file("/etc/systemd/system/slow.service",
                   b"[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n")
    deb.run("systemctl daemon-reload && systemctl start --no-block slow.service")
    with pytest.raises(UnitTimeout, match=r"unit `slow` of vm `deb_one` was not active after 1s \(it is `activating`\)"):
        deb.wait_unit("slow", {"timeout": 1})
    deb.run("systemctl stop --no-block slow.service")


def test_journal_of_the_whole_system(deb):
    text = deb.journal(lines=5)
    assert 1 <= len(text.strip().splitlines()) <= 5


def test_unit_helpers_on_the_linux_guest_say_there_is_no_systemd(vm_factory):
    vm = vm_factory.shared("plain")
    with pytest.raises(NoSystemd, match="vm `plain` \\(profile `linux`\\) is not run by systemd"):
        vm.wait_unit("nginx")
    with pytest.raises(NoSystemd):
        vm.journal("nginx")


def test_packages_add_a_service_that_serves_a_page(debs):
    web = debs.create("web", "web")
    try:
        web.boot()
        web.wait_unit("nginx", timeout=180)
        fetch = "import urllib.request as u; print(u.urlopen('http://127.0.0.1/', timeout=30).read().decode())"
        r = web.run(["python3", "-c", fetch])
        assert r.exit_code == 0 and "Welcome to nginx" in r.stdout.decode(), r.stderr
        assert "Started nginx.service" in web.journal("nginx", lines=50)
        assert web.run("command -v nginx").exit_code == 0
    finally:
        web.close()


def test_vms_of_one_base_do_not_see_each_others_writes(debs, deb):
    deb.write_file("/root/only-in-deb-one", b"1")
    deb.run("sync")
    other = debs.create("deb_two", "debian")
    try:
        other.boot()
        assert other.run("test -e /root/only-in-deb-one").exit_code == 1
        other.write_file("/root/only-in-deb-two", b"2")
        other.run("sync")
        assert deb.run("test -e /root/only-in-deb-two").exit_code == 1
        assert deb.disk("rootfs").image != other.disk("rootfs").image
    finally:
        other.close()


def test_a_snapshot_carries_the_root_disk(debs, deb, tmp_path):
    deb.write_file("/root/before-snapshot", b"kept")
    snap = deb.snapshot(str(tmp_path / "deb.snap"))
    restored = debs.create("deb_restored", "debian")
    try:
        restored.restore(snap)
        assert restored.read_file("/root/before-snapshot") == b"kept"
        restored.write_file("/root/after-restore", b"x")
        restored.run("sync")
        assert deb.run("test -e /root/after-restore").exit_code == 1
        deb.write_file("/root/after-snapshot", b"y")
        assert restored.run("test -e /root/after-snapshot").exit_code == 1
    finally:
        restored.close()
        snap.delete()


def test_the_base_image_is_unchanged(base_image, deb):
    deb.run("sync")
    path, before = base_image
    assert content_digest(path) == before
    assert os.stat(path).st_mode & 0o222 == 0  # read-only: only ever a backing file


def test_the_power_button_powers_it_off(deb):
    """It ends the shared VM (a later test would get a new one).  systemd-logind (it needs dbus) acts on the key."""
    deb.wait_unit("systemd-logind", timeout=120)
    deb.power_button(timeout=120)
    assert deb.state == "shutdown"


FIXTURE = """\
local vm = provium:vm("deb", "debian"):boot()
vm:wait_unit("multi-user.target", {timeout = 300})
vm:write_file("/etc/systemd/system/note.service", "[Service]\\nExecStart=/bin/sleep infinity\\n")
vm:run("systemctl daemon-reload && systemctl start note"):assert_ok()
vm:write_file("/root/from-fixture", "built once\\n")
return vm:snapshot()
"""

FIXTURE_TEST = """\
test("a restored debian fixture has its files and services", function(t)
  local a = provium:vm_fixture("fixtures/deb")
  local b = provium:vm_fixture("fixtures/deb")
  t:assert_eq(a:read_file("/root/from-fixture"), "built once\\n")
  a:wait_unit("note", {timeout = 60})
  a:write_file("/root/only-a", "a")
  t:assert_eq(b:run("test -e /root/only-a").exit_code, 1)
  t:assert_eq(b:read_file("/root/from-fixture"), "built once\\n")
end)
"""


def test_a_debian_fixture_is_built_once_and_restored_from_the_cache(tmp_path):
    """Through the CLI, twice: the second run restores the stored fixture (its root overlay
    stored compressed beside it) instead of booting."""
    import json
    import subprocess
    import sys

    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "deb.fixture.lua").write_text(FIXTURE)
    (tmp_path / "deb.test.lua").write_text(FIXTURE_TEST)
    env = dict(os.environ, PROVIUM_FIXTURE_CACHE=str(tmp_path / "fx"), PROVIUM_RERUN_STATE=str(tmp_path / "r.json"))
    for attempt in ("build", "cache hit"):
        saved = tmp_path / f"events-{attempt.replace(' ', '-')}.bin"
        r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--json", "--no-progress", "--save-events",
                            str(saved), "deb.test.lua"], cwd=tmp_path, env=env,
                           capture_output=True, timeout=900)
        out = r.stdout.decode() + r.stderr.decode()
        assert r.returncode == 0, f"{attempt}: {out}"
        [obj] = [json.loads(line) for line in r.stdout.decode().splitlines()]
        assert [t["status"] for t in obj["tests"]] == ["passed"], out
        events = saved.read_bytes()
        # (the second vm_fixture call of the first run is already a hit)
        assert (b"fixture_build_done" in events) == (attempt == "build"), attempt
        assert b"fixture_cache_hit" in events, attempt

"""The built-in `linux` guest as a small normal system, and host programs run in it (docs/guests.md)."""

import shutil

import pytest

from qemu_util import needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]

HOST_LS = shutil.which("ls")


@pytest.fixture(scope="module")
def vm(vm_factory):
    # `ls` from coreutils links libc and libselinux (and through it libpcre2): a real
    # dynamically linked program, copied with its loader and libraries.
    return vm_factory.booted("web_1", "linux", {"files": [
        {"path": "/usr/local/bin/gnu-ls", "host": HOST_LS, "libs": True},
    ]})


def test_hostname_hosts_passwd_group(vm):
    assert vm.run("hostname").stdout == b"web-1\n"  # `_` is not valid in a host name
    hosts = vm.read_file("/etc/hosts").decode()
    assert "127.0.0.1\tlocalhost" in hosts and "web-1" in hosts
    assert vm.run("id -un; id -gn").stdout == b"root\nroot\n"
    assert vm.run("grep -c nobody /etc/passwd").stdout == b"1\n"
    assert vm.run("grep -c nogroup /etc/group").stdout == b"1\n"


def test_host_binary_with_its_libraries_runs(vm):
    r = vm.run("/usr/local/bin/gnu-ls --version")
    assert r.exit_code == 0, r.stderr
    assert b"GNU coreutils" in r.stdout
    r = vm.run("/usr/local/bin/gnu-ls -d /etc")
    assert r.stdout == b"/etc\n"

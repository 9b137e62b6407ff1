"""Boot options seen by the guest, reset and the ACPI power button.

The tests share one VM through `vm_factory.shared`; the power-button test
leaves it off, and whichever test runs after it gets a freshly booted one, so
the order does not matter.
"""

import pytest

from provium.host.errors import VmmFailure

from qemu_util import needs_qemu, qemu_processes

pytestmark = [pytest.mark.qemu, needs_qemu]

INITIAL_TIME = 1_900_000_000  # 2030-03-17


@pytest.fixture
def vm(vm_factory):
    return vm_factory.shared("life", "linux", {"initial_time": INITIAL_TIME, "rng_seed": 42, "memory": 256 << 20})


def test_initial_time_and_rng_seed(vm):
    t = int(vm.run("date +%s").stdout)
    assert INITIAL_TIME <= t < INITIAL_TIME + 120
    seed = vm.read_file("/sys/firmware/qemu_fw_cfg/by_name/opt/provium/rng-seed/raw")
    assert seed == b"%016x" % 42
    mem_kib = int(vm.run("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout)
    assert 200 << 10 < mem_kib <= 256 << 10


def test_init_set_the_guest_up(vm):
    # /init's one `mount -a` and one `modprobe -a` (image/initramfs.py): the filesystems,
    # every driver it loads (unsigned modules: the kernel says so in its taint flags), the name
    r = vm.run("cut -d' ' -f2,3 /proc/mounts; cut -d' ' -f1 /proc/modules; cat /proc/sys/kernel/tainted; hostname")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.decode().split("\n")
    for mount in ("/proc proc", "/sys sysfs", "/dev devtmpfs", "/tmp tmpfs", "/dev/pts devpts"):
        assert mount in lines, mount
    for module in ("virtio_pci", "virtio_console", "virtio_blk", "virtio_net", "qemu_fw_cfg"):
        assert module in lines, module
    assert int(lines[-3]) & (1 << 13)  # TAINT_UNSIGNED_MODULE
    assert lines[-2] == vm.name or lines[-2].startswith("life")
    # the late modules come from the same modules.dep
    assert vm.run("modprobe -n -v evdev; grep -c provium/ /lib/modules/$(uname -r)/modules.dep").exit_code == 0


def test_wakeup_on_a_running_guest_is_a_clear_error(vm):
    with pytest.raises(VmmFailure, match="wakeup"):
        vm.wakeup()
    assert vm.run("true").exit_code == 0


def test_reset_reboots_and_reconnects(vm):
    vm.write_file("/tmp/before-reset", b"x")
    up_before = float(vm.run("cut -d' ' -f1 /proc/uptime").stdout)
    vm.reset()
    assert vm.state == "booted"
    assert not vm.exists("/tmp/before-reset")  # a fresh guest: tmpfs is gone
    up_after = float(vm.run("cut -d' ' -f1 /proc/uptime").stdout)
    assert up_after < up_before + 60 and vm.run("echo again").stdout == b"again\n"
    assert len(qemu_processes()) == 1  # same QEMU process


def test_power_button_powers_off(vm):
    pid = vm.instance.pid
    vm.power_button(60)
    assert vm.state == "shutdown"
    assert pid not in [p.pid for p in qemu_processes()]
    assert b"reboot: Power down" in vm.console_tail(4096) or vm.instance.proc.returncode == 0

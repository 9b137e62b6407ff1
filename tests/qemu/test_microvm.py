"""The same guest on the `microvm` machine (virtio-mmio, no PCI, no HPET)."""

import pytest

from provium import vmm
from provium.config import load
from provium.host import Session

from qemu_util import factory_for, needs_qemu, qemu_processes

pytestmark = [pytest.mark.qemu, needs_qemu]


def test_microvm_boots_runs_and_powers_off():
    cfg = load(None)
    cfg.profiles["linux"].machine = "microvm"
    with Session(vmm.create("qemu"), cfg) as s, factory_for(s) as vms:
        vm = vms.booted("tiny", "linux")
        assert "virtio-serial-device" in (vm.instance.scratch / "qemu.argv").read_text()
        r = vm.run("ls /sys/bus/virtio/devices; ls /sys/bus/pci/devices 2>/dev/null | wc -l")
        assert r.stdout.split() == [b"virtio0", b"0"]
        with pytest.raises(Exception, match="hot-plug needs PCIe, and this VM's machine is microvm"):
            vm.attach_disk({"id": "late", "scratch": "1M"})  # no PCI: no hot-plug (issue 8)
        vm.power_button(60)
        assert vm.state == "shutdown" and qemu_processes() == []

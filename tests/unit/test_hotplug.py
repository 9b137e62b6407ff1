"""The q35 hot-plug port allocator (pure bookkeeping; the real plug is in tests/qemu)."""

import pytest

from provium.errors import ProviumError
from provium.vmm.qemu.hotplug import HotplugError, HotplugSlots


def test_ports_on_the_command_line():
    argv = HotplugSlots("q35", 3).argv()
    devs = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert len(devs) == 3 and argv.count("-device") == 3
    assert devs[0] == "pcie-root-port,id=hp0,bus=pcie.0,chassis=1,addr=0x10,io-reserve=0"
    # distinct chassis and slot numbers, or QEMU refuses to start
    assert len({d.split("chassis=")[1].split(",")[0] for d in devs}) == 3
    assert len({d.split("addr=")[1].split(",")[0] for d in devs}) == 3


def test_allocate_free_reuse():
    s = HotplugSlots("q35", 2)
    a = s.allocate("disk:a")
    b = s.allocate("nic:b")
    assert (a.id, b.id) == ("hp0", "hp1")
    assert s.held() == {"hp0": "disk:a", "hp1": "nic:b"}
    with pytest.raises(HotplugError) as ei:
        s.allocate("disk:c")
    assert "all 2 hot-plug ports are in use (hp0=disk:a, hp1=nic:b)" in str(ei.value)
    s.free("disk:a")
    s.free("disk:a")  # idempotent
    assert s.allocate("disk:c").id == "hp0"
    assert s.port_of("nic:b").id == "hp1"


def test_one_port_per_owner():
    s = HotplugSlots("q35", 2)
    s.allocate("disk:a")
    with pytest.raises(HotplugError, match="already holds hot-plug port `hp0`"):
        s.allocate("disk:a")


def test_microvm_has_none():
    s = HotplugSlots("microvm", 4)
    assert s.argv() == [] and s.ports == ()
    with pytest.raises(HotplugError) as ei:
        s.allocate("disk:x")
    assert isinstance(ei.value, ProviumError)
    assert "disk:x: hot-plug needs PCIe, and this VM's machine is microvm" in str(ei.value)


def test_claim_for_restore():
    s = HotplugSlots("q35", 2)
    assert s.claim("hp1", "disk:a").id == "hp1"
    assert s.allocate("disk:b").id == "hp0"
    with pytest.raises(HotplugError, match="held by disk:a"):
        s.claim("hp1", "disk:c")
    with pytest.raises(HotplugError, match="no hot-plug port `hp9`"):
        s.claim("hp9", "disk:c")


def test_bad_count():
    with pytest.raises(HotplugError, match="0..32"):
        HotplugSlots("q35", 99)

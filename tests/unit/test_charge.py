"""A file's whole pool charge read from its source (what --executor ray asks Ray for)."""

from __future__ import annotations

from pathlib import Path

from provium.config import Profile
from provium.events.types import ResourceAmount
from provium.scheduler.charge import ChargeRules, file_charge
from provium.scheduler.declared import declared_vms
from provium.scheduler.pool import FILE_OVERHEAD, MIB, size_pool

QEMU = size_pool(vmm="qemu", memory=64 << 30, cpus=16)
LOCAL = size_pool(vmm="local", memory=64 << 30, cpus=16)


def write(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return str(p)


def test_creations_are_found_and_lookups_are_not(tmp_path):
    path = write(tmp_path, "a.test.lua", """
        local a = provium:vm("a", "linux")
        local b = provium:vm("b", "big", {memory = "1G", cpus = 2})
        local lab = provium:lab("l")
        lab:vm("c", "linux", { cpus = 3; memory = "2G" }):boot()
        local again = provium:vm("a")          -- a lookup
        -- provium:vm("commented", "linux")
        for i = 1, 3 do provium:vm("n" .. i, prof, {memory = size}) end
        test("x", function(t) provium.vm("d", "linux", {memory = 300 * 1024 * 1024}) end)
    """)
    vms = declared_vms(path)
    assert [(v.name, v.profile, v.memory, v.cpus) for v in vms] == [
        ("a", "linux", None, None),
        ("b", "big", 1 << 30, 2),
        ("c", "linux", 2 << 30, 3),
        (None, None, None, None),  # name, profile and memory not literal: defaults
        ("d", "linux", None, None),  # an expression for memory is not read
    ]


def test_charge_is_overhead_plus_each_vm_as_the_pool_charges_its_boot(tmp_path):
    path = write(tmp_path, "a.test.lua", """
        provium:vm("a", "linux")
        provium:vm("b", "big")
        provium:vm("c", "linux", {memory = "256M", cpus = 2})
    """)
    rules = ChargeRules(pool=QEMU, profiles={"big": Profile(name="big", memory=2 << 30, cpus=4)})
    ch = file_charge(path, rules)
    vm = 100 * MIB  # VMM overhead per VM
    assert ch.amount == ResourceAmount(FILE_OVERHEAD + (512 * MIB + vm) + (2048 * MIB + vm) + (256 * MIB + vm),
                                       1 + 4 + 2)
    assert not ch.kvm
    assert "3 declared VM(s) (`a`, `b`, `c`)" in ch.describe()


def test_a_claim_replaces_the_vms_and_local_charges_no_vm(tmp_path):
    claimed = write(tmp_path, "c.test.lua", """
        provium:claim{memory = "3G", cpus = 2}
        provium:vm("a", "linux"); provium:vm("b", "linux")
    """)
    ch = file_charge(claimed, ChargeRules(pool=QEMU, profiles={}))
    assert ch.amount == ResourceAmount(FILE_OVERHEAD + (3 << 30), 2)
    assert "provium:claim" in ch.describe()
    plain = write(tmp_path, "p.test.lua", 'provium:vm("a", "linux"); provium:vm("b", "linux")')
    # --vmm local: the "VMs" are host processes, the pool charges the overhead (50 MiB, one CPU) only.
    assert file_charge(plain, ChargeRules(pool=LOCAL, profiles={})).amount == ResourceAmount(FILE_OVERHEAD, 1)


def test_kvm_follows_the_run_accel_else_the_profiles(tmp_path):
    path = write(tmp_path, "k.test.lua", 'provium:vm("a", "fast")')
    profiles = {"fast": Profile(name="fast", accel="kvm"), "linux": Profile(name="linux")}
    assert file_charge(path, ChargeRules(pool=QEMU, profiles=profiles)).kvm
    assert not file_charge(path, ChargeRules(pool=QEMU, profiles=profiles, accel="tcg")).kvm
    assert not file_charge(path, ChargeRules(pool=LOCAL, profiles=profiles)).kvm
    other = write(tmp_path, "o.test.lua", 'provium:vm("a", "linux")')
    assert not file_charge(other, ChargeRules(pool=QEMU, profiles=profiles)).kvm
    assert file_charge(other, ChargeRules(pool=QEMU, profiles=profiles, accel="kvm")).kvm


def test_a_fixture_brings_its_vms(tmp_path):
    write(tmp_path, "fx/base.fixture.lua", 'local v = provium:vm("base", "linux", {memory="1G"}):boot()\n'
                                           'return v:snapshot()')
    path = write(tmp_path, "f.test.lua", 'local vm = provium:vm_fixture("fx/base")\nprovium:vm("extra", "linux")')
    vms = declared_vms(path, [str(tmp_path)])
    assert [(v.name, v.memory) for v in vms] == [("extra", None), ("base", 1 << 30)]
    # A fixture that names itself does not loop.
    write(tmp_path, "fx/self.fixture.lua", 'provium:vm_fixture("fx/self")\nprovium:vm("s", "linux")')
    loop = write(tmp_path, "g.test.lua", 'provium:vm_fixture("fx/self")')
    assert [v.name for v in declared_vms(loop, [str(tmp_path)])] == ["s"]

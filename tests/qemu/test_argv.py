"""The QEMU command line and the accel choice (pure: no VM boots here)."""

from pathlib import Path

import pytest

from provium.vmm import VmmError, create
from provium.vmm.qemu import accel
from provium.vmm.base import DiskSpec
from provium.vmm.qemu.argv import QemuConfig, build, rtc_base


def _cfg(**kw):
    base = dict(qemu="qemu-system-x86_64", machine="q35", accel="tcg", memory_bytes=512 << 20, cpus=2,
                kernel=Path("/k"), initrd=Path("/i,x"), cmdline="console=ttyS0 rdinit=/sbin/provium-agent",
                scratch=Path("/s"))
    base.update(kw)
    return QemuConfig(**base)


def _opt(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_q35_argv():
    argv = build(_cfg())
    assert _opt(argv, "-M") == ["q35,accel=tcg"] and _opt(argv, "-cpu") == ["qemu64,+rdrand"]
    assert _opt(argv, "-m") == ["512M"] and _opt(argv, "-smp") == ["2"]
    assert {"-nodefaults", "-no-reboot"} <= set(argv)
    assert _opt(argv, "-initrd") == ["/i,,x"]  # commas doubled inside option values
    assert _opt(argv, "-append") == ["console=ttyS0 rdinit=/sbin/provium-agent"]
    assert "-qmp" not in argv and "-mon" not in argv  # no QMP without a socket to hand QEMU
    with_qmp = build(_cfg(qmp_fd=7))
    assert "socket,id=qmp,fd=7" in _opt(with_qmp, "-chardev") and _opt(with_qmp, "-mon") == ["chardev=qmp,mode=control"]
    assert "socket,id=agent,path=/s/agent.sock,server=on,wait=off" in _opt(argv, "-chardev")
    assert "virtio-serial-pci,id=vser0" in _opt(argv, "-device")
    assert "virtserialport,bus=vser0.0,chardev=agent,id=agent-port,name=org.provium.agent" in _opt(argv, "-device")
    console = [c for c in _opt(argv, "-chardev") if c.startswith("socket,id=console")][0]
    assert "logfile=/s/console.log" in console and "logappend=on" in console
    assert _opt(argv, "-serial") == ["chardev:console"]
    assert not any("vsock" in a for a in argv)
    assert [d for d in _opt(argv, "-device") if d.startswith("pcie-root-port")][0] == \
        "pcie-root-port,id=hp0,bus=pcie.0,chassis=1,addr=0x10,io-reserve=0"


def test_mediated_disk_argv():
    d = DiskSpec(id="db,1", scratch=1 << 20, mediated=True, image="/s/db.img", nbd_socket="/s/db.nbd")
    argv = build(_cfg(disks=[d], hotplug_ports=0))
    import json
    node = json.loads(_opt(argv, "-blockdev")[0])
    assert node["file"] == {"driver": "nbd", "server": {"type": "unix", "path": "/s/db.nbd"}, "export": "db,1"}
    assert node["cache"] == {"direct": True, "no-flush": False}
    assert "driver=virtio-blk-pci,drive=disk0,serial=db,,1,id=disk0-dev,bus=disk0-port" in _opt(argv, "-device")
    assert [d for d in _opt(argv, "-device") if d.startswith("pcie-root-port")] == \
        ["pcie-root-port,id=disk0-port,bus=pcie.0,chassis=64,io-reserve=0"]  # detachable boot disk


def test_microvm_kvm_and_extras():
    argv = build(_cfg(machine="microvm", accel="kvm", memory_bytes=100, initrd=None, rng_seed=42,
                      initial_time=1_900_000_000.7, disks=[DiskSpec(id="data", path="/d.img", image="/d.img", readonly=True)]))
    assert _opt(argv, "-M") == ["microvm,pit=on,pic=on,rtc=on,accel=kvm"] and _opt(argv, "-cpu") == ["host"]
    assert _opt(argv, "-m") == ["1M"] and "-initrd" not in argv
    assert "virtio-serial-device,id=vser0" in _opt(argv, "-device")
    assert _opt(argv, "-fw_cfg") == ["name=opt/provium/rng-seed,string=000000000000002a"]
    assert _opt(argv, "-rtc") == ["base=2030-03-17T17:46:40,clock=host"]
    assert _opt(argv, "-blockdev") == ['{"node-name":"disk0","driver":"raw","read-only":true,'
                                       '"file":{"driver":"file","filename":"/d.img"}}']
    assert "driver=virtio-blk-device,drive=disk0,serial=data,id=disk0-dev" in _opt(argv, "-device")
    assert not any(d.startswith("pcie-root-port") for d in _opt(argv, "-device"))  # microvm: no PCIe


def test_rtc_base_limits():
    assert rtc_base(None) is None
    assert rtc_base(0) == "1970-01-01T00:00:00"
    assert rtc_base(-5) is None
    assert rtc_base(1e20) is None


def test_bad_accel_option():
    with pytest.raises(VmmError, match="accel 'fast' is not valid"):
        create("qemu", accel="fast")


def test_auto_accel_probes_once_and_remembers(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(accel, "kvm_openable", lambda: (True, ""))
    monkeypatch.setattr(accel, "qemu_version", lambda q: "QEMU emulator version 7.2.99")
    monkeypatch.setattr(accel, "_known", {})

    def probe(qemu, kernel, timeout):
        calls.append(kernel)
        return False, "a KVM guest did not boot within 3s"

    monkeypatch.setattr(accel, "_probe", probe)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    assert accel.resolve("auto", qemu="q", kernel=kernel, cache_dir=tmp_path) == ("tcg", "a KVM guest did not boot within 3s")
    monkeypatch.setattr(accel, "_known", {})  # a new process: the verdict comes from disk
    assert accel.resolve("auto", qemu="q", kernel=kernel, cache_dir=tmp_path)[0] == "tcg"
    assert len(calls) == 1
    assert (tmp_path / "kvm-probe.json").is_file()
    assert accel.resolve("kvm", qemu="q", kernel=kernel) == ("kvm", "")  # explicit: no probe
    monkeypatch.setattr(accel, "kvm_openable", lambda: (False, "/dev/kvm does not exist"))
    assert accel.resolve("auto", qemu="q", kernel=kernel) == ("tcg", "/dev/kvm does not exist")


def test_tcg_guests_skip_the_io_apic_timer_check():
    # Under load the kernel's early IO-APIC timer check can fail in TCG and the guest panics.
    from provium.vmm.qemu.backend import tcg_cmdline
    assert tcg_cmdline("console=ttyS0", machine="q35", accel="tcg").split() == ["console=ttyS0", "no_timer_check"]
    assert tcg_cmdline("console=ttyS0 no_timer_check", machine="q35", accel="tcg").count("no_timer_check") == 1
    assert tcg_cmdline("console=ttyS0", machine="q35", accel="kvm") == "console=ttyS0"
    micro = tcg_cmdline("console=ttyS0", machine="microvm", accel="tcg")
    assert "no_timer_check" in micro.split()

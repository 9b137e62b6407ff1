"""Standalone mode: an initrd with no /init (only the kernel's modules); the agent is PID 1."""

import pytest

from provium import vmm
from provium.config import Profile, load
from provium.host import Session
from provium.image import cache
from provium.image.cpio import CpioWriter, gzip_bytes
from provium.image.kernel import find_kernel, module_load_order, read_module

from qemu_util import factory_for, needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]


def test_agent_alone_mounts_loads_its_driver_and_serves(tmp_path):
    k = find_kernel()
    w = CpioWriter()
    mods = module_load_order(k.modules_dir, ("virtio_pci", "virtio_console"))
    wanted = set()
    for m in mods:
        rel = m.relative_to(k.modules_dir).as_posix().split(".ko")[0] + ".ko"  # decompressed
        w.add_file(f"lib/modules/{k.version}/{rel}", read_module(m))
        wanted.add(rel)
    # the kernel's own modules.dep, restricted to what we ship, with decompressed names
    lines = []
    for line in (k.modules_dir / "modules.dep").read_text().splitlines():
        names = [n.split(".ko")[0] + ".ko" for n in line.replace(":", " ").split()]
        if names and names[0] in wanted:
            lines.append(f"{names[0]}: {' '.join(names[1:])}")
    assert len(lines) == len(wanted)
    w.add_file(f"lib/modules/{k.version}/modules.dep", ("\n".join(lines) + "\n").encode())
    initrd = cache.atomic_write(tmp_path / "modules-only.cpio.gz", gzip_bytes(bytes(w)))
    cfg = load(None)
    cfg.profiles["bare"] = Profile(name="bare", kernel=str(k.path), initrd=str(initrd),
                                   cmdline="console=ttyS0 quiet panic=-1", agent_boot_timeout=60.0)
    with Session(vmm.create("qemu"), cfg) as s, factory_for(s) as vms:
        vm = vms.booted("bare", "bare")
        assert vm.syscall(39).ret == 1  # getpid: the agent itself is PID 1
        mounts = vm.read_file("/proc/mounts").decode()
        for fs, where in (("devtmpfs", "/dev"), ("proc", "/proc"), ("sysfs", "/sys"), ("tmpfs", "/tmp")):
            assert f"{fs} {where} " in mounts, (fs, mounts)
        assert "virtio_console" in vm.read_file("/proc/modules").decode()
        assert int(vm.read_file("/sys/class/net/lo/flags"), 16) & 1  # the agent brought `lo` up
        # no /bin/sh in this initrd: a command by absolute path still runs
        assert vm.run(["/provium/bin/busybox", "echo", "standalone"]).stdout == b"standalone\n"
        vm.shutdown()

"""Kernel lookup, module load order from modules.dep, and the built-in initramfs."""

import lzma
import stat
import subprocess

import pytest

from provium.image import initramfs
from provium.image.cpio import read_initrd
from provium.image.errors import ImageError
from provium.image.kernel import SIG_MARKER, find_kernel, module_load_order, modules_dep, read_module, strip_signature


def _modules_dir(tmp_path, compressed=False):
    d = tmp_path / "6.1.0-test"
    ext = ".ko.xz" if compressed else ".ko"
    dep = {
        "kernel/drivers/virtio/virtio_ring": [],
        "kernel/drivers/virtio/virtio": ["kernel/drivers/virtio/virtio_ring"],
        "kernel/drivers/virtio/virtio_pci_modern_dev": [],
        "kernel/drivers/virtio/virtio_pci": ["kernel/drivers/virtio/virtio_pci_modern_dev",
                                             "kernel/drivers/virtio/virtio", "kernel/drivers/virtio/virtio_ring"],
        "kernel/drivers/char/hw_random/virtio-rng": ["kernel/drivers/virtio/virtio", "kernel/drivers/virtio/virtio_ring"],
    }
    lines = []
    for mod, deps in dep.items():
        lines.append(f"{mod}{ext}: " + " ".join(x + ext for x in deps))
        f = d / (mod + ext)
        f.parent.mkdir(parents=True, exist_ok=True)
        body = b"\x7fELF" + mod.encode()
        f.write_bytes(lzma.compress(body) if compressed else body)
    (d / "modules.dep").write_text("\n".join(lines) + "\n")
    (d / "modules.builtin").write_text("kernel/drivers/tty/serial/8250/8250.ko\n")
    return d


def test_dependencies_load_first(tmp_path):
    d = _modules_dir(tmp_path)
    order = [p.name for p in module_load_order(d, ("virtio_pci", "virtio_rng"))]
    assert order == ["virtio_ring.ko", "virtio.ko", "virtio_pci_modern_dev.ko", "virtio_pci.ko", "virtio-rng.ko"]


def test_builtin_modules_are_skipped_and_unknown_ones_named(tmp_path):
    d = _modules_dir(tmp_path)
    assert [p.name for p in module_load_order(d, ("8250", "virtio"))] == ["virtio_ring.ko", "virtio.ko"]
    with pytest.raises(ImageError, match="kernel module `nosuch` not found"):
        module_load_order(d, ("nosuch",))


def test_compressed_modules_are_decompressed(tmp_path):
    d = _modules_dir(tmp_path, compressed=True)
    mods = module_load_order(d, ("virtio",))
    assert [p.name for p in mods] == ["virtio_ring.ko.xz", "virtio.ko.xz"]
    assert read_module(mods[1]) == b"\x7fELFkernel/drivers/virtio/virtio"


def test_modules_dep_for_the_shipped_files_with_their_dependencies(tmp_path):
    d = _modules_dir(tmp_path, compressed=True)
    files = module_load_order(d, ("virtio_pci", "virtio_rng"))
    dep = modules_dep(d, files, "/lib/modules/provium")
    lines = dict(line.split(":", 1) for line in dep.splitlines())
    p = "/lib/modules/provium/"
    assert lines[p + "virtio_ring.ko"] == ""
    # the host's order (busybox modprobe loads the last one first), names as shipped (a dash kept)
    assert lines[p + "virtio_pci.ko"].split() == [p + "virtio_pci_modern_dev.ko", p + "virtio.ko", p + "virtio_ring.ko"]
    assert lines[p + "virtio-rng.ko"].split() == [p + "virtio.ko", p + "virtio_ring.ko"]
    # a dependency not shipped is left out rather than named as a file that is not there
    assert modules_dep(d, files[:2], "/m").splitlines() == ["/m/virtio_ring.ko:", "/m/virtio.ko: /m/virtio_ring.ko"]


def test_strip_signature_drops_the_appended_signature_only(tmp_path):
    elf = b"\x7fELF" + bytes(range(256)) * 4
    sig = b"\x30\x82" + b"s" * 500
    info = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(sig).to_bytes(4, "big")
    signed = elf + sig + info + SIG_MARKER
    assert strip_signature(signed) == elf
    assert strip_signature(elf) == elf  # unsigned: unchanged
    assert strip_signature(b"x" + SIG_MARKER) == b"x" + SIG_MARKER  # too short to be a signature: unchanged
    f = tmp_path / "m.ko"
    f.write_bytes(signed)
    assert read_module(f) == signed and read_module(f, unsigned=True) == elf


def test_find_kernel_picks_newest_with_modules(tmp_path, monkeypatch):
    boot = tmp_path / "boot"
    boot.mkdir()
    for v in ("6.1.0-9-amd64", "6.1.0-10-amd64", "6.2.0-1-amd64"):
        (boot / f"vmlinuz-{v}").write_bytes(b"k")
    mods = tmp_path / "modules"
    (mods / "6.1.0-10-amd64").mkdir(parents=True)
    monkeypatch.setattr("provium.image.kernel.MODULES_ROOT", mods)
    k = find_kernel(boot)
    assert k.version == "6.1.0-10-amd64"  # 6.2 has no modules installed
    with pytest.raises(ImageError, match="apt-get install linux-image"):
        find_kernel(tmp_path / "empty")


def _host_kernel():
    try:
        return find_kernel()
    except ImageError:
        return None


@pytest.mark.skipif(_host_kernel() is None, reason="no packaged kernel on this host")
def test_builtin_initramfs_contents(tmp_path):
    k = _host_kernel()
    path = initramfs.ensure(k, tmp_path)
    assert path.parent == tmp_path / "images"
    assert initramfs.ensure(k, tmp_path) == path  # cache hit by content hash
    entries = {n: (m, d) for n, m, d in read_initrd(path.read_bytes())}
    init_mode, init = entries["init"]
    assert stat.S_IMODE(init_mode) == 0o755
    text = init.decode()
    assert "mount -a" in text and "exec /sbin/init" in text
    # the agent waits while this file exists; /init removes it once set up, last thing before init
    assert initramfs.INIT_PENDING in entries
    assert text.index(f"rm -f /{initramfs.INIT_PENDING}") > text.index("/etc/hosts")
    assert text.index(f"rm -f /{initramfs.INIT_PENDING}") < text.index("exec /sbin/init")
    from provium.agent.guest import INIT_PENDING
    assert INIT_PENDING == "/" + initramfs.INIT_PENDING
    # modules in dependency order, as files the init loads
    loads = text.split("for m in ", 1)[1].split(";", 1)[0].split()
    assert loads.index("virtio_ring") < loads.index("virtio") < loads.index("virtio_pci") < loads.index("virtio_console")
    for m in loads:
        assert entries[f"lib/modules/provium/{m}.ko"][1][:4] == b"\x7fELF"
        assert not entries[f"lib/modules/provium/{m}.ko"][1].endswith(SIG_MARKER)  # loaded unsigned (kernel.py)
    # ... all in one `modprobe -a`, which finds them and their dependencies in modules.dep
    assert text.count("modprobe -a $load") == 1 and "insmod" not in text
    dep = dict(line.split(":", 1) for line in entries[f"lib/modules/{k.version}/modules.dep"][1].decode().splitlines())
    shipped = {n for n in entries if n.startswith("lib/modules/provium/") and n.endswith(".ko")}
    assert {p.lstrip("/") for p in dep} == shipped
    assert dep["/lib/modules/provium/virtio_pci.ko"].split()[-1] == "/lib/modules/provium/virtio_ring.ko"
    assert all(d.lstrip("/") in shipped for deps in dep.values() for d in deps.split())
    assert b"devtmpfs /dev devtmpfs" in entries["etc/fstab"][1] and "mount -a" in text
    for applet in ("bin/sh", "sbin/ip", "bin/ping", "bin/mount", "bin/dd", "bin/date", "usr/bin/id", "bin/cat",
                   "sbin/acpid", "sbin/poweroff"):
        mode, target = entries[applet]
        assert stat.S_ISLNK(mode) and target == b"/bin/busybox", applet
    assert stat.S_ISCHR(entries["dev/console"][0])
    # where the agent overlay's launcher looks for busybox (the overlay leaves its copy out)
    assert entries[initramfs.OVERLAY_BUSYBOX] == (stat.S_IFLNK | 0o777, b"/bin/busybox")
    assert b"/etc/init.d/late" in entries["etc/inittab"][1]
    late = entries["etc/init.d/late"][1].decode()
    assert "button" in late and "evdev" in late and "acpid" in late
    assert "button" not in loads
    assert b"poweroff" in entries["etc/acpi/PWRF/00000080"][1]


def test_missing_busybox_is_actionable(monkeypatch):
    monkeypatch.setattr(initramfs, "BUSYBOX_CANDIDATES", ("/nonexistent/busybox",))
    monkeypatch.setattr(initramfs.shutil, "which", lambda name: None)
    with pytest.raises(ImageError, match="apt-get install busybox-static"):
        initramfs.find_busybox()



@pytest.mark.parametrize("pci, loaded, skipped", [
    (True, "virtio_pci", "virtio_mmio"),  # q35: a PCI bus, so no MMIO transport
    (False, "virtio_mmio", "virtio_pci"),  # microvm: no PCI devices at all
])
def test_init_loads_the_one_virtio_transport_the_machine_has(tmp_path, pci, loaded, skipped):
    busybox = initramfs.find_busybox()
    script = initramfs.init_script(["virtio_ring", "virtio_pci_modern_dev", "virtio_pci", "virtio_mmio",
                                    "virtio_console"])
    # the module loop alone, against a fake /sys/bus/pci/devices, echoing instead of loading
    start = script.index("set -- /sys/bus/pci/devices/*")
    loop = script[start:script.index("modprobe -a $load\n", start) + 18]
    devices = tmp_path / "devices"
    devices.mkdir()
    if pci:
        (devices / "0000:00:00.0").mkdir()
    loop = loop.replace("/sys/bus/pci/devices", str(devices)).replace("modprobe -a $load", "echo $load")
    out = subprocess.run([str(busybox), "sh", "-c", loop], capture_output=True, text=True, check=True).stdout.split()
    assert loaded in out and skipped not in out
    assert out[0] == "virtio_ring" and out[-1] == "virtio_console"

"""The built-in `linux` profile's initramfs: busybox-static, the kernel's virtio modules, an /init.

/init mounts the pseudo filesystems, loads the modules (so the agent's virtio-serial
port, disks and NICs appear) and hands PID 1 to busybox `init`, which reaps orphans,
keeps a shell on the serial console and runs `acpid`, so an ACPI power-button press
powers the guest off.  The agent overlay is appended on top of this image at boot.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import cache
from .cpio import CpioWriter
from .errors import ImageError
from .kernel import GUEST_MODULES, LATE_MODULES, SHARE_MODULES, HostKernel, module_load_order, modules_dep, read_module

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# Why the images provium builds are not compressed: under TCG the guest kernel's
# gunzip of the agent overlay cost about 0.4 s of emulated CPU per boot (QEMU's CPU
# time to a trivial /init: +0.38 s gzip, +0.24 s lz4, +0.40 s zstd, +0.11 s
# uncompressed), while copying a few more MiB from the host costs next to nothing.
# Concatenation pads each part to a 4-byte offset, where the kernel expects an
# uncompressed archive (cache.concat_files).

# Every busybox command that is not a shell builtin costs a fork and an exec, about
# 10 ms of emulated CPU each under TCG, and the agent starts beside /init on the same
# CPU: so one `mount -a` (/etc/fstab) for the pseudo filesystems, one `modprobe -a`
# (the modules.dep written beside the modules) for the drivers, and builtins for the rest.
INIT = """#!/bin/sh
# provium built-in guest: mount, load the drivers, then busybox init as PID 1.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -a
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# One virtio transport: PCI when there is a PCI bus (q35), else MMIO (microvm).  Every
# module loaded here delays the agent, which starts beside us on the same CPU.
set -- /sys/bus/pci/devices/*
pci=; [ -e "$1" ] && pci=1
load=
for m in {modules}; do
    case $m in
        virtio_pci*) [ -n "$pci" ] || continue;;
        virtio_mmio) [ -z "$pci" ] || continue;;
    esac
    load="$load $m"
done
modprobe -a $load
# The VM's name (provium.hostname= on the cmdline, see image/boot.py) as the hostname.
h=provium
read -r cmdline < /proc/cmdline
for w in $cmdline; do case $w in provium.hostname=?*) h=${{w#provium.hostname=}};; esac; done
echo "$h" > /proc/sys/kernel/hostname
echo "$h" > /etc/hostname
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "$h" > /etc/hosts
# The guest is set up: the agent, started beside us, may now answer the host.
rm -f {pending}
exec /sbin/init
"""

# What `mount -a` in /init mounts (devpts needs /dev/pts, made once devtmpfs is on /dev).
FSTAB = """\
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devtmpfs /dev devtmpfs defaults 0 0
tmpfs /tmp tmpfs mode=1777 0 0
"""

# In the image from the start, removed by /init once it has mounted, loaded the
# drivers and named the host.  The agent starts in parallel with /init and waits
# while this file exists before it serves (provium.agent.guest.wait_for_init), so
# the host never gets a guest without its disks, NICs or hostname.
INIT_PENDING = "run/provium-init-pending"

INITTAB = """\
::once:/etc/init.d/late
::respawn:/bin/cttyhack /bin/sh -l
::shutdown:/bin/sync
"""

# What the power button needs is loaded after init has started (and the agent with
# it), at low priority: on one emulated CPU every module loaded first delays the agent.
# Not the lowest: a power-button press that comes before acpid listens is lost, and at
# nice 19 a busy agent kept this waiting for seconds.
LATE = """#!/bin/sh
renice -n 10 -p $$ >/dev/null
modprobe -a {modules}
exec /sbin/acpid -f -c /etc/acpi
"""

# busybox acpid maps the power button's key press to the event path PWRF/00000080,
# relative to its -c directory, and runs the file found there.
POWER_BUTTON = """#!/bin/sh
exec /sbin/poweroff
"""

MODULES_DIR = "lib/modules/provium"
OVERLAY_BUSYBOX = "provium/bin/busybox"  # overlay.BUSYBOX

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def find_busybox() -> Path:
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        if p.is_file() and _is_static(p):
            return p
    found = shutil.which("busybox")
    if found and _is_static(Path(found)):
        return Path(found)
    raise ImageError("no statically linked busybox found on this host (looked in "
                     f"{', '.join(BUSYBOX_CANDIDATES)} and PATH)\n  → apt-get install busybox-static")


def _is_static(path: Path) -> bool:
    """True when the ELF has no PT_INTERP (so it runs without a loader or libc in the guest)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(int.from_bytes(table[i * phentsize: i * phentsize + 4], "little") != 3 for i in range(phnum))


def busybox_applets(busybox: Path) -> list[str]:
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"`{busybox} --list-full` failed: {exc}") from exc
    return [l.strip() for l in out.splitlines() if "/" in l.strip()]


def add_busybox(w: CpioWriter, busybox: Path, applets: list[str], prefix: str = "") -> None:
    """busybox at <prefix>/bin/busybox and every applet as a symlink to it."""
    w.add_file(f"{prefix}/bin/busybox", busybox.read_bytes(), 0o755)
    for a in applets:
        if a.endswith("/busybox"):
            continue
        w.add_symlink(f"{prefix}/{a}", f"{prefix}/bin/busybox" if prefix else "/bin/busybox")


def build(kernel: HostKernel, *, modules: tuple[str, ...] = GUEST_MODULES, init: str | None = None,
          extra: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    """The built-in initramfs: an uncompressed newc cpio (see UNCOMPRESSED).

    `init` replaces /init and `extra` adds files (guest path -> (bytes, mode));
    benchmarks use both to build variants of the same image.
    """
    busybox = find_busybox()
    mods = module_load_order(kernel.modules_dir, modules + LATE_MODULES)
    w = CpioWriter()
    for d in ("dev", "proc", "sys", "run", "root", "mnt", "var/log", "etc"):
        w.add_dir(d)
    w.add_dir("tmp", 0o1777)
    w.add_chardev("dev/console", 5, 1, 0o600)
    w.add_chardev("dev/null", 1, 3, 0o666)
    add_busybox(w, busybox, busybox_applets(busybox))
    # Where the agent overlay keeps its busybox: with it already here, the overlay
    # appended to this image leaves its own copy out (overlay.ensure(busybox=False)),
    # 2 MiB less for the guest kernel to unpack at every boot.
    w.add_symlink(OVERLAY_BUSYBOX, "/bin/busybox")
    names = []
    shipped = list(mods)
    for m in mods:
        name = m.name.split(".ko")[0]
        names.append(name)
        w.add_file(f"{MODULES_DIR}/{name}.ko", read_module(m, unsigned=True), 0o644)
    for m in module_load_order(kernel.modules_dir, SHARE_MODULES):
        name = m.name.split(".ko")[0]
        if name not in names:
            shipped.append(m)
            w.add_file(f"{MODULES_DIR}/{name}.ko", read_module(m, unsigned=True), 0o644)
    # For busybox modprobe (one process loads them all, dependencies first); paths are
    # absolute, so the files stay where shares.py and older scripts look for them.
    w.add_file(f"lib/modules/{kernel.version}/modules.dep",
               modules_dep(kernel.modules_dir, shipped, "/" + MODULES_DIR).encode(), 0o644)
    late = [n for n in names if n.replace("-", "_") in LATE_MODULES]
    early = [n for n in names if n not in late]
    w.add_file("init", (init or init_script(early)).encode(), 0o755)
    w.add_file(INIT_PENDING, b"/init removes this file once the guest is set up\n", 0o644)
    w.add_file("etc/inittab", INITTAB.encode())
    w.add_file("etc/init.d/late", LATE.format(modules=" ".join(late)).encode(), 0o755)
    w.add_file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    w.add_file("etc/passwd", PASSWD.encode())
    w.add_file("etc/group", GROUP.encode())
    w.add_file("etc/hostname", b"provium\n")
    w.add_file("etc/fstab", FSTAB.encode())
    for path, (data, mode) in sorted((extra or {}).items()):
        w.add_file(path, data, mode)
    return bytes(w)


def init_script(modules: list[str]) -> str:
    """The built-in /init, loading `modules` in that order."""
    return INIT.format(modules=" ".join(modules), pending="/" + INIT_PENDING)


def cache_key(kernel: HostKernel, modules: tuple[str, ...] = GUEST_MODULES, init: str | None = None) -> str:
    h = cache.Hasher("initramfs")
    h.add("builder", Path(__file__).read_bytes())
    h.add("cpio", (Path(__file__).parent / "cpio.py").read_bytes())
    h.add("kernel.py", (Path(__file__).parent / "kernel.py").read_bytes())  # how modules are read and stripped
    h.add("kernel-version", kernel.version.encode())
    h.add_file("busybox", find_busybox())
    for m in module_load_order(kernel.modules_dir, modules + LATE_MODULES + SHARE_MODULES):
        h.add_file(f"module:{m.name}", m)
    h.add("init", (init or "").encode())
    return h.hexdigest()


def ensure(kernel: HostKernel, cache_dir=None, *, modules: tuple[str, ...] = GUEST_MODULES,
           init: str | None = None) -> Path:
    """Path of the cached initramfs for `kernel`, building it on a miss."""
    key = cache_key(kernel, modules, init)
    path = cache.image_dir(cache_dir) / f"initramfs-{kernel.version}-{key[:16]}.cpio"
    if path.exists():
        return cache.use(path)
    cache.atomic_write(path, build(kernel, modules=modules, init=init))
    cache.prune(path.parent, "initramfs-", keep=path)
    return path


# Enough for the agent's port on either machine type: a transport and virtio_console.
AGENT_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                 "virtio_mmio", "virtio_console")


def modules_segment(kernel: HostKernel, cache_dir=None) -> Path:
    """An uncompressed cpio with just the modules the agent's port needs, for a profile that boots
    a host kernel with no initrd: /lib/modules/provium/NAME.ko and `order`, which the
    overlay's launcher insmods in that order (no modules.dep, no depmod needed)."""
    mods = module_load_order(kernel.modules_dir, AGENT_MODULES)
    h = cache.Hasher("agent-modules").add("kernel-version", kernel.version.encode())
    h.add("builder", Path(__file__).read_bytes())
    h.add("kernel.py", (Path(__file__).parent / "kernel.py").read_bytes())
    for m in mods:
        h.add_file(f"module:{m.name}", m)
    path = cache.image_dir(cache_dir) / f"agent-modules-{kernel.version}-{h.hexdigest()[:16]}.cpio"
    if path.exists():
        return cache.use(path)
    w = CpioWriter()
    names = []
    for m in mods:
        name = m.name.split(".ko")[0]
        names.append(name)
        w.add_file(f"lib/modules/provium/{name}.ko", read_module(m, unsigned=True), 0o644)
    w.add_file("lib/modules/provium/order", ("\n".join(names) + "\n").encode(), 0o644)
    cache.atomic_write(path, bytes(w))
    cache.prune(path.parent, "agent-modules-", keep=path)
    return path

"""The built-in `debian` profile's images: a Debian 12 root filesystem with systemd and the agent.

Two cached stages, each named by the hash of its inputs:

1. `debian-rootfs-<key>.tar`: `mmdebstrap --variant=minbase` of bookworm with the
   base packages and the profile's `packages`, from Debian's archive (the slow
   part: about 30 s to minutes, once per package set);
2. `debian-<key>.img`: that tree plus the host kernel's modules, a static busybox,
   the provium agent (run by the guest's own python3 and Debian's python3-msgpack)
   and its systemd unit, made into an ext4 image with `mkfs.ext4 -d` (no mounts).
   Rebuilt from the tar in seconds when the agent or the kernel changes.

The image is only ever read: each VM boots it through its own qcow2 overlay
(host/disk.py).  The kernel is the host's (as for `linux`) with a small initramfs
built here: it loads the virtio drivers, finds the root disk by its serial
(`provium.root=`), writes the hostname and /etc/hosts, and switches to systemd.

Building needs root (mmdebstrap's root mode, file ownership in the tree) and the
`mmdebstrap` and `e2fsprogs` packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from . import cache, initramfs
from .errors import ImageError
from .kernel import GUEST_MODULES, LATE_MODULES, HostKernel, find_kernel, module_load_order

# Bumped whenever what the steps below put into the image changes in a way the
# hashed sources do not show (e.g. a change in how mmdebstrap is called).
RECIPE_VERSION = 1
SUITE = "bookworm"
# What the guest needs besides the minbase essentials: systemd as init, udev, the
# agent's interpreter and msgpack, `ip` (provium's networks configure addresses
# with it), procps (`ps`, `pgrep`, `sysctl`: what tests reach for), kmod (`modprobe`) and
# dbus (without it systemd-logind does not start, and nothing acts on the ACPI power
# button: `vm:power_button` would time out).
BASE_PACKAGES = ("systemd", "systemd-sysv", "udev", "python3", "python3-msgpack", "iproute2", "procps", "kmod",
                 "dbus")
# Units masked: timers that would wake up during a test, and boot-time jobs a throwaway
# headless VM does not need; under emulation each competes with the agent's start for
# the guest's CPU (together they delayed it by seconds).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
                "fstrim.timer", "systemd-timesyncd.service", "systemd-binfmt.service",
                "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount", "getty-static.service",
                "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service", "kmod-static-nodes.service",
                "systemd-journal-flush.service", "systemd-random-seed.service", "systemd-firstboot.service",
                "systemd-sysusers.service", "systemd-pstore.service", "systemd-hwdb-update.service")
ROOT_SERIAL = "rootfs"  # the root disk's id: host/disk.py attaches it, our /init finds it by this serial
GUEST_AGENT_DIR = "/usr/lib/provium/python"
UNIT_NAME = "provium-agent.service"
# The image's nominal size; it is sparse, and the overlay of each VM only stores what the
# guest writes, so a generous size costs nothing but leaves room for the test's files.
MIN_IMAGE_SIZE = 4 << 30
MAX_PACKAGE_NAME = 128

_AGENT_CMD = (f"import sys; sys.path[:0] = [{GUEST_AGENT_DIR!r}]; import provium_boot; "
              "provium_boot.run({target!r})")


def agent_argv(target: str) -> list[str]:
    """The guest's own python3 running `target` ("module:function") from the agent's directory.

    `-I` keeps the guest's PYTHON* variables and the current directory out of the agent's
    path; `site` still runs, so Debian's dist-packages (python3-msgpack) is importable.
    """
    return ["/usr/bin/python3", "-I", "-X", "utf8", "-c", _AGENT_CMD.format(target=target)]


def _unit_quote(arg: str) -> str:
    """One argv word for a systemd ExecStart= line (C-style double quotes; `%` and `$` escaped)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def agent_unit() -> str:
    import json

    exec_json = json.dumps(agent_argv("provium.agent.__main__:main"), separators=(",", ":"))
    return f"""\
# provium guest agent: serves the host on the virtio-serial port `org.provium.agent`.
# First thing (no ordering after anything: stage 1 mounted / read-write, and systemd
# mounts /proc, /sys and /dev before any unit), at a high CPU weight, so a test starts
# while the rest of the system boots; wait for a service with vm:wait_unit().  Its
# output goes to the kernel log (dmesg, and the journal once journald reads it) so that
# it waits for no journald.  KillMode=process: what a test started (children of the
# agent) is not killed if the agent restarts.
[Unit]
Description=provium guest agent
DefaultDependencies=no
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=simple
Environment={_unit_quote("PROVIUM_AGENT_EXEC=" + exec_json)}
ExecStart={" ".join(_unit_quote(a) for a in agent_argv("provium.agent.guest:main"))}
StandardOutput=file:/dev/kmsg
StandardError=inherit
Restart=always
RestartSec=200ms
KillMode=process
OOMScoreAdjust=-1000
Nice=-10
CPUWeight=1000

[Install]
WantedBy=sysinit.target
"""


INIT = """#!/bin/sh
# provium `debian` guest, stage 1 (see provium/image/debian.py): drivers, root disk, systemd.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/provium/$m.ko; done
serial={serial}; h=provium
for w in $(cat /proc/cmdline); do case $w in
  provium.root=?*) serial=${{w#provium.root=}};;
  provium.hostname=?*) h=${{w#provium.hostname=}};;
esac; done
dev=; n=0
while [ -z "$dev" ]; do
  for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = "$serial" ] && dev=/dev/${{b##*/}}; done
  [ -n "$dev" ] && break
  n=$((n+1))
  [ $n -gt 500 ] && {{ echo "provium: no disk with serial '$serial' (the debian root disk) appeared"; exit 1; }}
  sleep 0.02
done
mkdir -p /newroot
mount -t ext4 -o rw "$dev" /newroot || {{ echo "provium: mounting the root disk $dev failed"; exit 1; }}
# The boot's `files` (image/boot.py puts them here), over the root filesystem.
[ -d /provium-files ] && cp -a /provium-files/. /newroot/
echo "$h" > /newroot/etc/hostname
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "$h" > /newroot/etc/hosts
for d in dev proc sys; do mount -o move /$d /newroot/$d; done
exec switch_root /newroot /sbin/init
"""

JOURNALD_CONF = """\
# provium: keep the journal in memory (a test VM's disk is thrown away anyway, and
# writing it costs boot time under emulation).
[Journal]
Storage=volatile
"""

# Replaces Debian's /usr/lib/tmpfiles.d/tmp.conf, whose `D /tmp` empties /tmp during boot:
# the agent answers before that runs, and a test's first files would vanish.
TMPFILES_TMP = "d /tmp 1777 root root -\nd /var/tmp 1777 root root -\n"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_packages(packages: object, where: str) -> list[str]:
    """`packages` as a list of Debian package names (apt's own syntax), or a clear error."""
    import re

    if not isinstance(packages, (list, tuple)):
        raise ImageError(f"{where}: `packages` must be a list of Debian package names, got {type(packages).__name__}")
    out = []
    for p in packages:
        if not isinstance(p, str) or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p) or len(p) > MAX_PACKAGE_NAME:
            raise ImageError(f"{where}: `packages`: {p!r} is not a Debian package name "
                             "(lower-case letters, digits, `+`, `-`, `.`; e.g. \"nginx\")")
        out.append(p)
    return sorted(set(out))


def package_set(extra: list[str]) -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(extra))


def rootfs_key(extra: list[str]) -> str:
    h = cache.Hasher("debian-rootfs")
    h.add("recipe", str(RECIPE_VERSION).encode()).add("suite", SUITE.encode())
    h.add("packages", ",".join(package_set(extra)).encode())
    return h.hexdigest()


def _agent_sources() -> list[tuple[str, Path]]:
    """(path under GUEST_AGENT_DIR, host file) for the agent, what it imports of provium, the boot shim."""
    import provium

    src = Path(provium.__file__).resolve().parent
    out = [("provium/__init__.py", src / "__init__.py"), ("provium/errors.py", src / "errors.py")]
    for pkg in ("agent", "protocol"):
        for f in sorted((src / pkg).rglob("*.py")):
            if "__pycache__" not in f.parts:
                out.append((f"provium/{f.relative_to(src).as_posix()}", f))
    out.append(("provium_boot.py", Path(__file__).with_name("guest_boot.py")))
    return out


def image_key(extra: list[str], kernel: HostKernel) -> str:
    h = cache.Hasher("debian-image")
    h.add("rootfs", rootfs_key(extra).encode())
    h.add("builder", Path(__file__).read_bytes())
    h.add("kernel-version", kernel.version.encode()).add_file("kernel", kernel.path)
    h.add_file("busybox", initramfs.find_busybox())
    for rel, f in _agent_sources():
        h.add_file(f"agent:{rel}", f)
    return h.hexdigest()


def image_path(extra: list[str], kernel: HostKernel | None = None, cache_dir=None) -> Path:
    k = kernel or find_kernel()
    return cache.image_dir(cache_dir) / f"debian-{image_key(extra, k)[:24]}.img"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per image at a time; a second waits and then finds it built."""
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _need_tools() -> None:
    if os.geteuid() != 0:
        raise ImageError("building the `debian` image needs root (mmdebstrap installs packages into a tree whose "
                         "files belong to their Debian owners)\n  → run `provium prepare debian` as root once; "
                         "the image is cached for every user of the same cache directory")
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("mkfs.ext4", "e2fsprogs"), ("tar", "tar")):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise ImageError(f"building the `debian` image needs `{tool}`, which is not installed\n"
                             f"  → apt-get install {pkg}")


def _run(argv: list[str], what: str, **kw) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-3000:]
        raise ImageError(f"{what} failed (exit code {proc.returncode}): {' '.join(argv[:3])} ...\n{tail}")


def ensure_rootfs(extra: list[str], cache_dir=None, say: Callable[[str], None] = _say) -> Path:
    """The cached mmdebstrap tarball for this package set, built on a miss."""
    path = cache.image_dir(cache_dir) / f"debian-rootfs-{rootfs_key(extra)[:24]}.tar"
    if path.exists():
        return cache.use(path)
    _need_tools()
    with _locked(path):
        if path.exists():
            return cache.use(path)
        pkgs = package_set(extra)
        say(f"provium: building the Debian {SUITE} root filesystem with mmdebstrap ({', '.join(pkgs)}); "
            "this takes a minute or more, once per package set")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--format=tar",
                  f"--include={','.join(pkgs)}", SUITE, str(tmp)], "mmdebstrap")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    cache.prune(path.parent, "debian-rootfs-", keep=path)
    return path


def _usr_path(tree: Path, rel: str) -> Path:
    """`tree/rel` with the merged-/usr symlinks of the top level followed (lib -> usr/lib)."""
    first, _, rest = rel.partition("/")
    top = tree / first
    if top.is_symlink():
        top = tree / os.readlink(top).lstrip("/")
    return top / rest if rest else top


def _write(tree: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = tree / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.unlink(missing_ok=True)
    p.write_text(text)
    os.chmod(p, mode)


def _guest_python_version(tree: Path) -> str:
    link = tree / "usr/bin/python3"
    target = os.readlink(link) if link.is_symlink() else ""
    return target.removeprefix("python") if target.startswith("python3.") else ""


def _install_agent(tree: Path) -> None:
    dest = tree / GUEST_AGENT_DIR.lstrip("/")
    for rel, f in _agent_sources():
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
    # Precompiled, so no VM compiles the agent at its boot (each VM's writes go to its own
    # overlay, so a cache written by the first would help no other).  Unchecked hashes: the
    # pyc files are never compared with the sources' mtimes.
    args = ["-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
    if _guest_python_version(tree) == "%d.%d" % sys.version_info[:2]:
        _run([sys.executable, *args, "-d", GUEST_AGENT_DIR, str(dest)], "compiling the agent")
    else:
        _run(["chroot", str(tree), "/usr/bin/python3", *args, GUEST_AGENT_DIR], "compiling the agent in the guest tree")
    _write(tree, f"etc/systemd/system/{UNIT_NAME}", agent_unit())
    wants = tree / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / UNIT_NAME).unlink(missing_ok=True)
    (wants / UNIT_NAME).symlink_to(f"/etc/systemd/system/{UNIT_NAME}")


def _configure(tree: Path, kernel: HostKernel) -> None:
    mods = _usr_path(tree, f"lib/modules/{kernel.version}")
    shutil.rmtree(mods, ignore_errors=True)
    shutil.copytree(kernel.modules_dir, mods, symlinks=True)
    # The static busybox every guest has at this path (host/shares.py and others use it).
    bb = tree / "provium/bin/busybox"
    bb.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(initramfs.find_busybox(), bb)
    os.chmod(bb, 0o755)
    _install_agent(tree)
    _write(tree, "etc/hostname", "provium\n")
    _write(tree, "etc/systemd/journald.conf.d/provium.conf", JOURNALD_CONF)
    _write(tree, "etc/tmpfiles.d/tmp.conf", TMPFILES_TMP)
    # The ACPI power button as an input device, for systemd-logind (udev did not load
    # them in our q35 guests): what `vm:power_button` presses.
    _write(tree, "etc/modules-load.d/provium.conf", "".join(f"{m}\n" for m in LATE_MODULES))
    for unit in MASKED_UNITS:
        link = tree / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # root logs in on the serial console (`provium console`) without a password: a test VM.
    shadow = tree / "etc/shadow"
    lines = shadow.read_text().splitlines(keepends=True)
    shadow.write_text("".join("root::" + l.split(":", 2)[2] if l.startswith("root:") else l for l in lines))


def _tree_size(tree: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(tree):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def ensure(extra: list[str] | None = None, cache_dir=None, say: Callable[[str], None] = _say) -> Path:
    """The cached ext4 image for this package set and the host kernel, built on a miss."""
    extra = list(extra or [])
    kernel = find_kernel()
    path = image_path(extra, kernel, cache_dir)
    if path.exists():
        return cache.use(path)
    tar = ensure_rootfs(extra, cache_dir, say)
    _need_tools()
    with _locked(path):
        if path.exists():
            return cache.use(path)
        say(f"provium: making the `debian` image {path.name} (agent, kernel modules, mkfs.ext4)")
        tree = Path(tempfile.mkdtemp(prefix=".debian-tree-", dir=path.parent))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tar), "-C", str(tree)],
                 "unpacking the root filesystem")
            _configure(tree, kernel)
            size = max(MIN_IMAGE_SIZE, _tree_size(tree) * 2)
            size = (size + (1 << 20) - 1) & ~((1 << 20) - 1)
            _run(["mkfs.ext4", "-q", "-F", "-L", "provium-root", "-d", str(tree), str(tmp), f"{size >> 20}M"],
                 "mkfs.ext4")
            os.chmod(tmp, 0o444)  # only ever a backing file: nothing writes it
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(tree, ignore_errors=True)
    cache.prune(path.parent, "debian-", keep=path)
    return path


def boot_modules(kernel: HostKernel) -> list[str]:
    return [m.name.split(".ko")[0] for m in module_load_order(kernel.modules_dir, GUEST_MODULES)]


def initrd(cache_dir=None) -> tuple[HostKernel, Path]:
    """(host kernel, the cached stage-1 initramfs that switches to the image's systemd)."""
    k = find_kernel()
    init = INIT.format(modules=" ".join(boot_modules(k)), serial=ROOT_SERIAL)
    return k, initramfs.ensure(k, cache_dir, init=init)

"""What a profile boots: kernel, initrd (profile's || agent overlay || per-boot files), cmdline.

Linux unpacks concatenated (compressed) cpio archives in order, later entries
replacing earlier ones, so injecting the agent never rewrites the user's initrd:
we append to it.  The merged image is cached by the hash of its parts; the
per-boot `files` segment is written into the VM's scratch directory instead,
being different on almost every boot.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import Profile
from . import cache, initramfs, overlay
from .cpio import CpioError, CpioWriter, gzip_bytes, norm_path
from .errors import ImageError
from .kernel import HostKernel, find_kernel

RDINIT = "rdinit=/sbin/provium-agent"
FILES_DIR = "provium-files"  # a distro guest's boot files, in its initramfs (image/debian.py)


@dataclass
class BootImages:
    kernel: Path
    initrd: Path | None
    cmdline: str


def prepare_profile(profile: Profile, cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """(kernel, initrd) of a profile, before agent injection.

    The built-in `linux` profile gets the host's newest packaged kernel and an
    initramfs built (once, then cached) from busybox-static and its modules.
    Other profiles' paths are checked to exist and be readable.  A `distro` profile
    boots the host kernel with the initramfs that mounts its root disk (image/debian.py;
    the disk itself is attached by host/disk.py).
    """
    if profile.distro:
        from . import debian

        k, rd = debian.initrd(cache_dir)
        return k.path, rd
    if _builtin_initramfs(profile):
        k = find_kernel()
        return k.path, initramfs.ensure(k, cache_dir)
    kernel = profile.resolve(profile.kernel)
    if kernel is None:
        raise ImageError(f"profile `{profile.name}`: no `kernel` set")
    _check_readable(profile, "kernel", kernel)
    initrd = profile.resolve(profile.initrd)
    if initrd is not None:
        _check_readable(profile, "initrd", initrd)
    elif profile.inject_agent:
        initrd = _agent_modules(profile, kernel, cache_dir)
    return kernel, initrd


def _builtin_initramfs(profile: Profile) -> bool:
    """The profile boots the host kernel with the initramfs provium builds (initramfs.py)."""
    return bool(profile.builtin and not profile.kernel and not profile.distro)


def _agent_modules(profile: Profile, kernel: Path, cache_dir) -> Path | None:
    """No initrd: the agent overlay is the whole initramfs, and its port needs virtio_pci
    and virtio_console.  A host kernel (`/boot/vmlinuz-VER` with `/lib/modules/VER`) gets
    them as a small modules segment; another kernel must have them built in (docs/guests.md)."""
    name = kernel.name
    if not name.startswith("vmlinuz-"):
        return None
    host = HostKernel(kernel, name[len("vmlinuz-"):])
    if not host.modules_dir.is_dir():
        return None
    try:
        return initramfs.modules_segment(host, cache_dir)
    except ImageError as exc:
        raise ImageError(f"profile `{profile.name}`: no `initrd`, so provium brings the modules the agent needs "
                         f"from {host.modules_dir}, but: {exc}") from exc


def _check_readable(profile: Profile, key: str, path: Path) -> None:
    hint = " (run `provium prepare` to build it)" if profile.build else ""
    if not path.exists():
        raise ImageError(f"profile `{profile.name}`: {key} `{path}` does not exist{hint}")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ImageError(f"profile `{profile.name}`: {key} `{path}` is not a readable file")


def overlay_path(profile: Profile, cache_dir=None) -> Path:
    """The profile's `agent_overlay_path`, or the overlay provium builds from its own agent
    (without the busybox the built-in initramfs already has where the overlay wants it)."""
    if profile.agent_overlay_path:
        p = profile.resolve(profile.agent_overlay_path)
        _check_readable(profile, "agent_overlay_path", p)
        return p
    return overlay.ensure(cache_dir, busybox=not _builtin_initramfs(profile))


def agent_initrd(profile: Profile, initrd: Path | None, cache_dir=None) -> Path:
    """initrd || overlay (or the overlay alone), cached by the hash of both parts."""
    ov = overlay_path(profile, cache_dir)
    if initrd is None:
        return ov
    h = cache.Hasher("merged-initrd").add_file("initrd", initrd).add_file("overlay", ov)
    path = cache.image_dir(cache_dir) / f"merged-{h.hexdigest()[:24]}.cpio"
    if path.exists():
        return cache.use(path)
    cache.concat_files(path, [initrd, ov])
    cache.prune(path.parent, "merged-", keep=path)
    return path


def boot_cmdline(profile: Profile, override: str | None, append: str, *, inject_agent: bool) -> str:
    """Profile cmdline (or the boot's replacement) + append + agent rdinit + console=ttyS0."""
    base = override if override is not None else profile.full_cmdline()
    words = base.split() + append.split()
    if inject_agent:
        rdinits = [w for w in words if w.startswith("rdinit=")]
        wrong = [w for w in rdinits if w != RDINIT]
        if wrong:
            raise ImageError(
                f"profile `{profile.name}`: the kernel cmdline sets `{wrong[0]}`, but provium starts its agent "
                f"with `{RDINIT}`; remove the `rdinit=` from the cmdline, or set `inject_agent = false` "
                "in the profile if the initrd starts the agent itself")
        if not rdinits:
            words.append(RDINIT)
    if not any(w == "console=ttyS0" or w.startswith("console=ttyS0,") for w in words):
        words.append("console=ttyS0")
    return " ".join(words)


def files_segment(files: Iterable[Any], prefix: str = "") -> bytes:
    """The per-boot files as a gzip'd newc cpio (ancestors 0755 first, files 0644 by default),
    each under the directory `prefix` when one is given.

    Compressed unlike the images (initramfs.py): it is small, and gzip'd it needs no
    alignment, so it can also follow an initrd concatenated by someone else.
    """
    w = CpioWriter()
    entries = []
    for f in files:
        path = getattr(f, "path", None)
        try:
            name = norm_path(path, "boot_opts.files: path")  # type: ignore[arg-type]  # it checks the type
        except CpioError as exc:
            raise ImageError(str(exc)) from exc
        mode = getattr(f, "mode", 0o644)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ImageError(f"boot_opts.files: `mode` for `{path}` must be an integer permission mask "
                             f"(e.g. 0x1ed for 0755), got {mode!r}")
        content = getattr(f, "content", b"")
        if isinstance(content, str):
            content = content.encode()
        entries.append((f"{prefix}/{name}" if prefix else name, bytes(content), mode))
    dirs = sorted({"/".join(n.split("/")[:i]) for n, _, _ in entries for i in range(1, n.count("/") + 1)})
    for d in dirs:
        w.add_dir(d, 0o755)
    seen: dict[str, int] = {}
    for i, (name, content, mode) in enumerate(entries):
        if name in dirs:
            raise ImageError(f"boot_opts.files: `{name}` is both a file and the directory of another file")
        seen[name] = i  # a later entry for the same path wins, as it would in the guest
    for name, i in sorted(seen.items(), key=lambda kv: kv[1]):
        _, content, mode = entries[i]
        w.add_file(name, content, mode)
    return gzip_bytes(bytes(w))


def guest_hostname(name: str) -> str:
    """A VM name as a valid host name (RFC 1123 label): other characters become `-`."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", name)[:63].strip("-")
    return label or "provium"


def compose(profile: Profile, *, kernel_cmdline: str | None = None, kernel_cmdline_append: str = "",
            files: Iterable[Any] = (), scratch: Path, cache_dir=None, vm_name: str | None = None) -> BootImages:
    """Everything QEMU's -kernel/-initrd/-append need for one boot of `profile`.

    For the built-in profile, `vm_name` becomes the guest's hostname (its /init reads
    `provium.hostname=`; a dotted word is a module parameter to the kernel, so it is
    neither passed to init nor complained about).
    """
    kernel, initrd = prepare_profile(profile, cache_dir)
    if ((profile.builtin and not profile.kernel) or profile.distro) and vm_name:
        kernel_cmdline_append = f"{kernel_cmdline_append} provium.hostname={guest_hostname(vm_name)}".strip()
    # A distro guest has the agent in its root filesystem, started by its init: nothing to inject.
    inject = profile.inject_agent and not profile.distro
    if profile.distro:
        from .debian import ROOT_SERIAL

        # net.ifnames=0: NICs are eth0, eth1, ... in attachment order, as in the `linux` guest.
        kernel_cmdline_append = f"provium.root={ROOT_SERIAL} rw net.ifnames=0 {kernel_cmdline_append}".strip()
    cmdline = boot_cmdline(profile, kernel_cmdline, kernel_cmdline_append, inject_agent=inject)
    if inject:
        initrd = agent_initrd(profile, initrd, cache_dir)
    files = list(files)
    if files:
        # A distro guest leaves the initramfs for its root disk: its /init copies them over.
        segment = files_segment(files, FILES_DIR if profile.distro else "")
        out = scratch / "initrd.img"
        cache.concat_files(out, ([initrd] if initrd else []) + [segment])
        initrd = out
    return BootImages(kernel, initrd, cmdline)


def describe(images: BootImages) -> str:
    return f"kernel {images.kernel}, initrd {images.initrd or '(none)'}, cmdline {shlex.quote(images.cmdline)}"

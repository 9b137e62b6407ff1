"""The host's packaged kernel and its modules, as the built-in `linux` profile uses them."""

from __future__ import annotations

import gzip
import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError

BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

# What the built-in guest needs at once: virtio transports (PCI for q35, MMIO for
# microvm), the agent's serial port first, then disks and NICs, and fw_cfg (so the
# guest can read the boot's rng seed).
GUEST_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "virtio_mmio", "virtio_console", "virtio_blk", "failover", "net_failover", "virtio_net",
    "qemu_fw_cfg",
)
# ... and once the agent is up: the ACPI power button seen through evdev (so busybox
# acpid can power the guest off).
LATE_MODULES = ("button", "evdev")
# Shipped but loaded only when a VM has host directory shares (host/shares.py).
SHARE_MODULES = ("fuse", "virtiofs")


@dataclass(frozen=True)
class HostKernel:
    path: Path
    version: str

    @property
    def modules_dir(self) -> Path:
        return MODULES_ROOT / self.version


def _version_key(v: str) -> list:
    # "6.1.0-56-cloud-amd64" sorts numerically by its number runs.
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.findall(r"\d+|[^\d]+", v)]


def find_kernel(boot_dir: Path = BOOT_DIR) -> HostKernel:
    """The newest `/boot/vmlinuz-<version>` that has a matching `/lib/modules/<version>`."""
    found = sorted(boot_dir.glob("vmlinuz-*"), key=lambda p: _version_key(p.name[8:]), reverse=True)
    if not found:
        raise ImageError(
            f"built-in profile `linux`: no kernel found in {boot_dir} (looked for vmlinuz-*)\n"
            "  → apt-get install linux-image-cloud-amd64, or set `kernel`/`initrd` in a provium.toml profile")
    with_modules = [p for p in found if (MODULES_ROOT / p.name[8:]).is_dir()]
    path = (with_modules or found)[0]
    version = path.name[8:]
    if not os.access(path, os.R_OK):
        raise ImageError(
            f"built-in profile `linux`: kernel `{path}` is not readable by this user\n"
            f"  → chmod a+r {path} (Ubuntu installs kernels 0600), or run provium as root")
    return HostKernel(path, version)


def _mod_name(file_name: str) -> str:
    base = file_name.rsplit("/", 1)[-1]
    for suf in _SUFFIXES:
        if base.endswith(suf):
            base = base[: -len(suf)]
            break
    return base.replace("-", "_")


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """Module files to `insmod`, dependencies first, computed from `modules.dep`.

    Modules built into the kernel (`modules.builtin`) need no file and are skipped.
    """
    dep_file = modules_dir / "modules.dep"
    try:
        lines = dep_file.read_text().splitlines()
    except OSError as exc:
        raise ImageError(f"built-in profile `linux`: cannot read `{dep_file}`: {exc.strerror or exc}\n"
                         "  → reinstall the kernel package (its modules are missing)") from exc
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in lines:
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[_mod_name(mod)] = (mod.strip(), rest.split())
    builtin: set[str] = set()
    try:
        builtin = {_mod_name(l.strip()) for l in (modules_dir / "modules.builtin").read_text().splitlines() if l.strip()}
    except OSError:
        pass
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name not in deps:
            if name in builtin:
                seen.add(name)
                return
            raise ImageError(f"built-in profile `linux`: kernel module `{name}` not found in `{dep_file}`"
                             + (f" (needed by {chain[-1]})" if chain else ""))
        seen.add(name)
        rel, needs = deps[name]
        # modules.dep lists the deepest dependency last; visit in reverse so it loads first.
        for d in reversed(needs):
            visit(_mod_name(d), chain + (name,))
        order.append(rel)

    for w in wanted:
        visit(w, ())
    return [modules_dir / rel for rel in order]


def modules_dep(modules_dir: Path, files: list[Path], where: str) -> str:
    """A modules.dep for `files` (module files of `modules_dir`) installed flat under the
    directory `where`: each line `where/NAME.ko: where/DEP.ko ...`, dependencies in the
    order the host's modules.dep gives them (busybox modprobe loads the last first)."""
    names = {_mod_name(f.name): f.name.split(".ko")[0] for f in files}
    needs: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            needs[_mod_name(mod)] = [_mod_name(d) for d in rest.split()]
    lines = []
    for key, name in names.items():
        deps = [f"{where}/{names[d]}.ko" for d in needs.get(key, []) if d in names]
        lines.append(f"{where}/{name}.ko:" + "".join(f" {d}" for d in deps))
    return "\n".join(lines) + "\n"


# The trailer of a signed module: the PKCS#7 signature, a struct module_signature
# (12 bytes, its last 4 the signature's length, big-endian), then this marker.
SIG_MARKER = b"~Module signature appended~\n"
_SIG_INFO = 12


def strip_signature(data: bytes) -> bytes:
    """A module's ELF without its appended signature (unchanged when it has none).

    Why the built-in guest loads its modules unsigned: Debian's kernel checks each
    module's signature on load (CONFIG_MODULE_SIG), which hashes the whole file with
    SHA-256; the emulated CPU has no SHA instructions, and under TCG that hashing
    was most of what loading the eleven drivers cost (0.17 s of emulated CPU signed,
    0.08 s unsigned, with the agent starting beside them).  The kernel does not require
    signatures (no CONFIG_MODULE_SIG_FORCE): it loads the module and marks itself
    tainted (`E` in /proc/sys/kernel/tainted), which a test guest can live with.
    """
    if not data.endswith(SIG_MARKER):
        return data
    end = len(data) - len(SIG_MARKER)
    if end < _SIG_INFO:
        return data
    sig_len = int.from_bytes(data[end - 4:end], "big")
    start = end - _SIG_INFO - sig_len
    if start < 0:
        return data
    return data[:start]


def read_module(path: Path, *, unsigned: bool = False) -> bytes:
    """A module's ELF bytes (busybox insmod in the guest cannot decompress, so we do it
    here), without its signature when `unsigned` (see strip_signature)."""
    data = _read_module(path)
    return strip_signature(data) if unsigned else data


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data

"""VMM backends.  `create("qemu" | "local", **options)` builds one by name."""

from __future__ import annotations

from .base import BootFile, Unimplemented, VmInstance, Vmm, VmmError, VmSpec

BACKENDS = ("qemu", "local")


def create(name: str, **options) -> Vmm:
    if name == "local":
        from .local import LocalVmm

        return LocalVmm(**options)
    if name == "qemu":
        from .qemu import QemuVmm

        return QemuVmm(**options)
    raise VmmError(f"unknown VMM backend `{name}` (valid: {', '.join(BACKENDS)})")


__all__ = ["BootFile", "Unimplemented", "VmInstance", "Vmm", "VmmError", "VmSpec", "create", "BACKENDS"]

"""The QEMU backend (`provium.vmm.create("qemu")`)."""

from .backend import QemuInstance, QemuVmm

__all__ = ["QemuInstance", "QemuVmm"]

"""Helpers shared by the real-QEMU tests."""

import itertools
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

from provium.host import VM, Session

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 is not installed (make sysdeps)")


def qemu_processes(parent_pid: int | None = None) -> list[psutil.Process]:
    """Live QEMU processes descended from `parent_pid` (default: this process)."""
    out = []
    try:
        kids = psutil.Process(parent_pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in kids:
        try:
            if p.name().startswith("qemu-system") and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


class VmFactory:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.vms: list[VM] = []
        self._shared: dict[str, VM] = {}
        self._serial = itertools.count(1)

    def create(self, name: str, profile: str = "linux", opts: Mapping[str, Any] | None = None) -> VM:
        vm = VM(self.session, name, profile, dict(opts) if opts else None)
        self.vms.append(vm)
        return vm

    def booted(self, name: str, profile: str = "linux", opts: Mapping[str, Any] | None = None) -> VM:
        return self.create(name, profile, opts).boot()

    def shared(self, key: str, profile: str = "linux", opts: Mapping[str, Any] | None = None) -> VM:
        """The booted VM for `key`; a new one if the last test left it unusable."""
        vm = self._shared.get(key)
        if vm is None or vm.state != "booted":
            name = key if vm is None else f"{key}-{next(self._serial)}"
            vm = self._shared[key] = self.booted(name, profile, opts)
        return vm

    def close(self) -> None:
        for vm in reversed(self.vms):
            vm.close()


@contextmanager
def factory_for(session: Session) -> Iterator[VmFactory]:
    """A VmFactory over a session of the module's own (a custom config); shuts its VMs down."""
    factory = VmFactory(session)
    try:
        yield factory
    finally:
        factory.close()

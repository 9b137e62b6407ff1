"""Real QEMU guests (TCG is fine).  Each module shares its booted VMs: a boot costs seconds.

`vm_factory` (one per module) builds VMs, records them and shuts them all down
when the module ends, so nothing outlives it whatever a test did.  Its
`shared(key, ...)` hands out one booted VM per key and boots a replacement when
a test left it unusable (shut down, powered off, dead), so tests do not depend
on running in file order, and the usual order still costs one boot.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from provium import vmm
from provium.config import load
from provium.host import VM, Session


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    with Session(vmm.create("qemu"), load(None)) as s:
        yield s


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


@pytest.fixture(scope="module")
def vm_factory(session: Session) -> Iterator[VmFactory]:
    factory = VmFactory(session)
    yield factory
    factory.close()

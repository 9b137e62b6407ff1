"""Real QEMU guests (TCG is fine).  Each module shares its booted VMs: a boot costs seconds.

`vm_factory` (one per module) builds VMs, records them and shuts them all down
when the module ends, so nothing outlives it whatever a test did.  Its
`shared(key, ...)` hands out one booted VM per key and boots a replacement when
a test left it unusable (shut down, powered off, dead), so tests do not depend
on running in file order, and the usual order still costs one boot.
A module with a session of its own (a custom config) uses
`qemu_util.factory_for(session)` the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from qemu_util import VmFactory

from provium import vmm
from provium.config import load
from provium.host import Session


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    with Session(vmm.create("qemu"), load(None)) as s:
        yield s


@pytest.fixture(scope="module")
def vm_factory(session: Session) -> Iterator[VmFactory]:
    factory = VmFactory(session)
    yield factory
    factory.close()

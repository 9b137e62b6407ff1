"""Real QEMU guests (TCG is fine).  Each module shares one booted VM: a boot costs seconds."""

import pytest

from provium import vmm
from provium.config import load
from provium.host import Session


@pytest.fixture(scope="module")
def session():
    with Session(vmm.create("qemu"), load(None)) as s:
        yield s

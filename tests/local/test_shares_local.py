"""The local backend refuses `shares` (there is no guest to mount them in)."""

import pytest

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import VmmFailure


def test_local_backend_refuses_shares(tmp_path):
    with Session(vmm.create("local"), load(None)) as s:
        vm = VM(s, "a", "linux")
        with pytest.raises(VmmFailure, match="cannot honour boot option `shares`"):
            vm.boot({"shares": [{"host": str(tmp_path), "guest": "/mnt/x"}]})

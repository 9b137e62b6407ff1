"""Nothing the network layer starts outlives its session: the switch's thread and
scratch directory, its sockets, and the uplink's QEMU process (no guest needed:
the local backend and a guestless uplink are enough)."""

from __future__ import annotations

import os
import threading

import pytest

from provium import vmm
from provium.config import load
from provium.host import Session
from provium.host.lab import Lab

pytestmark = pytest.mark.qemu  # the uplink is a QEMU process


def test_session_close_stops_the_switch_and_the_uplink():
    s = Session(vmm.create("local"), load(None))
    lab = Lab(s)
    lan = lab.bridge("lan", {"addressing": True})
    lan.enable_uplink({"ports": [8080]})
    proc = lan._uplink.proc
    root = lan.switch.root
    assert proc.poll() is None and root.is_dir() and any(root.glob("*.sock"))
    assert any(t.name == "provium-switch" for t in threading.enumerate())
    s.close()
    assert proc.poll() is not None  # killed and reaped
    assert not root.exists()
    assert not any(t.name == "provium-switch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_bridge_close_stops_its_uplink_and_ports():
    with Session(vmm.create("local"), load(None)) as s:
        lab = Lab(s)
        lan = lab.bridge("lan", {"addressing": True})
        lan.enable_uplink({"ports": {80: 8080}})
        proc = lan._uplink.proc
        sock = lan._uplink.port.path
        lan.close()
        assert proc.poll() is not None and not sock.exists()
        assert lan.uplink_address() is None

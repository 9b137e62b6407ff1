"""The bridge graph and the switch, with plain unix-socket clients standing in for QEMU.

A client speaks what QEMU's `-netdev stream` speaks (4-byte big-endian length +
Ethernet frame), so forwarding, filters and impairments are checked here in
milliseconds; tests/qemu/test_net.py checks the same with real guests.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from provium.net.errors import BridgeArgumentError, NetError
from provium.net.graph import (
    BridgeGraph,
    Impairment,
    check_bridge_name,
    mac_address,
    tap_name,
)
from provium.net.pcap import GLOBAL_HEADER, PcapSink
from provium.net.switch import Switch


def test_tap_name_is_the_references():
    assert tap_name("web", "lan") == "tap-webcc960b4"
    assert len(tap_name("a-very-long-vm-name", "bridge")) <= 15
    assert tap_name("a", "lan") != tap_name("a", "wan")
    assert tap_name("ünï", "x").startswith("tap-")


def test_mac_is_stable_unicast_and_local():
    m = mac_address("a", "lan", "lab")
    assert m == mac_address("a", "lan", "lab") and m != mac_address("b", "lan", "lab")
    assert m.startswith("52:54:00:")


@pytest.mark.parametrize("name", ["", "a b", "x" * 16, "-x", "é", "a.b"])
def test_bad_bridge_names(name):
    with pytest.raises(BridgeArgumentError, match="is not valid"):
        check_bridge_name(name)


def test_reserved_bridge_name():
    with pytest.raises(NetError, match="reserved"):
        check_bridge_name("pack")


def test_policy_partitions_isolation_and_flags():
    g = BridgeGraph("lan")
    g.attach(["a", "b", "c"])
    g.partition("a", "b")
    p = g.policy
    assert p.blocks("a", "b") and p.blocks("b", "a") and not p.blocks("a", "c")
    g.partition_directional("a", "c")
    assert g.policy.blocks("a", "c") and not g.policy.blocks("c", "a")
    g.isolate("c")
    assert g.policy.blocks("b", "c") and not g.is_partitioned("b", "c")
    g.partition_all()
    assert g.policy.blocks("b", "a") and g.is_partitioned("x", "y")
    g.restore_all()
    assert g.is_partitioned("a", "b")  # pair partitions survive restore_all
    g.reset()
    assert not g.is_partitioned("a", "b") and g.is_isolated("c")  # reset keeps isolation
    with pytest.raises(BridgeArgumentError, match="from itself"):
        g.partition("a", "a")
    with pytest.raises(NetError, match=r"vm `z` is not attached to bridge `lan` \(attached: \[a, b, c\]\)"):
        g.partition_directional("a", "z")


def test_detach_forgets_what_named_the_member():
    g = BridgeGraph("lan")
    g.attach(["a", "b"])
    g.partition("a", "b")
    g.isolate("a")
    g.set_directional("a", "b", "x", latency_ms=5)
    g.detach("a")
    assert g.members() == ["b"] and not g.is_partitioned("a", "b") and not g.is_isolated("a")
    assert g.directional_impairments() == {}


def test_impairments_stack():
    a = Impairment(latency_ms=10, drop_pct=50)
    b = Impairment(latency_ms=5, drop_pct=50, bandwidth_bps=1000)
    s = a.stacked(b)
    assert s.latency_ms == 15 and s.drop_pct == 75 and s.bandwidth_bps == 1000


# ---- the switch with fake NICs ----------------------------------------------------------------

def _mac(m: str) -> bytes:
    return bytes(int(x, 16) for x in m.split(":"))


def frame(dst: str, src: str, payload: bytes = b"x" * 50, ethertype: int = 0x0800) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack(">H", ethertype) + payload


def rec(f: bytes) -> bytes:
    return struct.pack(">I", len(f)) + f


class Nic:
    def __init__(self, port) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(port.path))
        self.mac = port.mac
        assert port.connected.wait(5)
        self.buf = b""

    def send(self, f: bytes) -> None:
        self.sock.sendall(rec(f))

    def frames(self, timeout: float = 0.3, want: int | None = None) -> list[bytes]:
        out = []
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (want is None or len(out) < want):
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buf += data
            while len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) < 4 + n:
                    break
                out.append(self.buf[4:4 + n])
                self.buf = self.buf[4 + n:]
        return out


@pytest.fixture
def lan(tmp_path):
    sw = Switch(str(tmp_path))
    g = BridgeGraph("lan", seed=7)
    g.attach(["a", "b", "c"])
    nics = {n: Nic(sw.add_port(g, n, mac_address(n, "lan"), f"t-{n}")) for n in "abc"}
    yield sw, g, nics
    for n in nics.values():
        n.sock.close()
    sw.close()
    assert not (tmp_path / f"provium-net-{__import__('os').getpid()}").exists()


def test_broadcast_floods_and_unicast_learns(lan):
    _sw, _g, n = lan
    bcast = frame("ff:ff:ff:ff:ff:ff", n["a"].mac)
    n["a"].send(bcast)
    assert n["b"].frames(want=1) == [bcast] and n["c"].frames(want=1) == [bcast]
    assert n["a"].frames(0.1) == []  # never back to the sender
    n["b"].send(frame(n["a"].mac, n["b"].mac))  # b learns nothing new; a's MAC is known
    assert len(n["a"].frames(want=1)) == 1 and n["c"].frames(0.1) == []


def test_partition_and_directional(lan):
    _sw, g, n = lan
    g.partition("a", "b")
    n["a"].send(frame("ff:ff:ff:ff:ff:ff", n["a"].mac))
    assert n["b"].frames(0.15) == [] and len(n["c"].frames(want=1)) == 1
    g.unpartition("a", "b")
    g.partition_directional("b", "a")
    n["a"].send(frame("ff:ff:ff:ff:ff:ff", n["a"].mac))
    n["b"].send(frame("ff:ff:ff:ff:ff:ff", n["b"].mac))
    assert len(n["b"].frames(want=1)) == 1  # a -> b flows
    assert n["a"].frames(0.15) == []  # b -> a does not


def test_link_down_stops_both_directions(lan):
    sw, g, n = lan
    port_b = sw.bridge(g).ports[1]
    sw.set_up(port_b, False)
    n["a"].send(frame("ff:ff:ff:ff:ff:ff", n["a"].mac))
    n["b"].send(frame("ff:ff:ff:ff:ff:ff", n["b"].mac))
    assert n["b"].frames(0.15) == []
    assert len(n["a"].frames(0.15)) == 0 and len(n["c"].frames(want=1)) == 1


def _dropped(sw, g, n, count=400) -> list[int]:
    for i in range(count):
        n["a"].send(frame(n["b"].mac, n["a"].mac, struct.pack(">I", i) + b"y" * 40))
    got = n["b"].frames(2.0, want=count)
    seen = {struct.unpack(">I", f[14:18])[0] for f in got}
    return [i for i in range(count) if i not in seen]


def test_seeded_drops_repeat_exactly(lan):
    sw, g, n = lan
    n["b"].send(frame("ff:ff:ff:ff:ff:ff", n["b"].mac))  # teach the switch b's MAC
    n["a"].frames(0.1), n["c"].frames(0.1)
    g.set_whole(drop_pct=30.0)
    first = _dropped(sw, g, n)
    g.set_whole(drop_pct=30.0)  # a new policy restarts the generators
    second = _dropped(sw, g, n)
    assert first == second
    assert 0.22 < len(first) / 400 < 0.38
    g.reseed(8)
    assert _dropped(sw, g, n) != first


def test_latency_is_scheduled_delivery(lan):
    _sw, g, n = lan
    n["b"].send(frame("ff:ff:ff:ff:ff:ff", n["b"].mac))
    n["a"].frames(0.1), n["c"].frames(0.1)
    g.set_whole(latency_ms=50.0)
    t0 = time.monotonic()
    n["a"].send(frame(n["b"].mac, n["a"].mac))
    assert len(n["b"].frames(1.0, want=1)) == 1
    assert 0.045 < time.monotonic() - t0 < 0.5


def test_bandwidth_shapes(lan):
    _sw, g, n = lan
    n["b"].send(frame("ff:ff:ff:ff:ff:ff", n["b"].mac))
    n["a"].frames(0.1), n["c"].frames(0.1)
    g.set_whole(bandwidth_bps=800_000)  # 100 kB/s
    f = frame(n["b"].mac, n["a"].mac, b"z" * 986)  # 1000-byte frames
    t0 = time.monotonic()
    for _ in range(30):
        n["a"].send(f)
    got = n["b"].frames(2.0, want=30)
    elapsed = time.monotonic() - t0
    assert len(got) == 30
    assert 0.27 < elapsed < 0.6  # 30 kB at 100 kB/s


def test_oversized_length_closes_the_port(lan):
    sw, g, n = lan
    n["a"].sock.sendall(struct.pack(">I", 10_000_000) + b"x" * 100)
    assert n["a"].frames(0.5) == []
    port = sw.bridge(g).ports[0]
    assert port.errors == 1


def test_capture_writes_a_pcap(lan, tmp_path):
    dpkt = pytest.importorskip("dpkt")
    sw, g, n = lan
    sink = PcapSink(tmp_path / "c.pcap")
    sw.add_capture(sink, g)
    f = frame("ff:ff:ff:ff:ff:ff", n["a"].mac)
    n["a"].send(f)
    n["b"].frames(want=1)
    sw.remove_capture(sink, g)
    sink.close()
    data = (tmp_path / "c.pcap").read_bytes()
    assert data.startswith(GLOBAL_HEADER)
    with open(tmp_path / "c.pcap", "rb") as fh:
        pkts = list(dpkt.pcap.Reader(fh))
    assert [p for _, p in pkts] == [f]

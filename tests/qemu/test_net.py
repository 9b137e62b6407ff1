"""Networks on real guests: two TCG VMs on one bridge, through provium's switch.

One pair of VMs serves the whole module (boots are the expensive part); each test
leaves the bridge as it found it (`reset`, reconnect, unisolate).  A test that
cannot (NIC hot-plug: the VMs cannot be snapshotted afterwards) sets
`pair.spoiled`, and any test after it gets a new pair, so the order does not matter
and the usual order costs no extra boot.  Timing
assertions use medians and tolerances meant for a loaded 2-core machine.
"""

from __future__ import annotations

import itertools
import re
import statistics
import time

import pytest

from provium.host.lab import Lab

pytestmark = pytest.mark.qemu


class _Pair:
    """The module's lab (two VMs on `lan`), rebuilt when a test spoiled the last one."""

    def __init__(self, session) -> None:
        self.session = session
        self.current: tuple | None = None
        self.spoiled = False
        self.labs: list[Lab] = []

    def get(self) -> tuple:
        if self.current is None or self.spoiled:
            if self.current is not None:
                self.current[1].close()
            lab = Lab(self.session)
            self.labs.append(lab)
            a = lab.create_vm("a", "linux")
            b = lab.create_vm("b", "linux")
            lan = lab.bridge("lan", {"addressing": True, "seed": 1234})
            lan.attach([a, b])
            lab.boot()
            self.current, self.spoiled = (self.session, lab, a, b, lan), False
        return self.current

    def close(self) -> None:
        for lab in self.labs:
            lab.close()


@pytest.fixture(scope="module")
def pair(session):
    p = _Pair(session)
    yield p
    p.close()  # the module's VMs go with its last test


@pytest.fixture
def net(pair):
    return pair.get()


def ping(vm, host: str, count: int = 3, interval: float = 0.2, wait: int = 2) -> tuple[int, list[float], set[int]]:
    """(exit code, RTTs in ms, sequence numbers answered)."""
    r = vm.run(f"ping -c {count} -i {interval} -W {wait} {host}", timeout=120)
    out = r.stdout.decode()
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    seqs = {int(x) for x in re.findall(r"seq=(\d+)", out)}
    return r.exit_code, rtts, seqs


def test_members_ping_each_other_by_name(net):
    _, _, a, b, lan = net
    code, rtts, _ = ping(a, "b.lan")
    assert code == 0 and len(rtts) == 3
    code, _, _ = ping(b, "a.lan")
    assert code == 0
    assert lan.address_of(a) == "10.77.1.10" or lan.address_of(a).endswith(".10")
    c = lan.port_of("a").counters()
    assert c["tx_packets"] > 0 and c["rx_packets"] > 0


def test_partition_then_unpartition_and_reset(net):
    _, _, a, b, lan = net
    lan.partition(a, b)
    try:
        assert ping(a, "b.lan", count=2, wait=1)[0] != 0
    finally:
        lan.unpartition(a, b)
    assert ping(a, "b.lan", count=2)[0] == 0
    lan.partition(a, b)
    lan.reset()
    assert ping(a, "b.lan", count=2)[0] == 0


def _udp_arrivals(receiver) -> int:
    """Datagrams the receiver got on a closed port (Udp NoPorts in /proc/net/snmp)."""
    lines = [ln.split() for ln in receiver.read_file("/proc/net/snmp").decode().splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def _send_udp(sender, addr: str) -> None:
    # busybox nc has no UDP mode; nslookup sends its queries as UDP datagrams to port 53.
    sender.run(f"nslookup -timeout=1 -retry=1 probe {addr}", timeout=30)


def test_directional_partition_blocks_one_direction(net):
    _, _, a, b, lan = net
    lan.partition_directional(a, b)
    try:
        before_b, before_a = _udp_arrivals(b), _udp_arrivals(a)
        _send_udp(a, lan.address_of(b))
        _send_udp(b, lan.address_of(a))
        assert _udp_arrivals(b) == before_b  # a -> b is blocked
        assert _udp_arrivals(a) > before_a  # b -> a still flows
    finally:
        lan.unpartition_directional(a, b)
    before_b = _udp_arrivals(b)
    _send_udp(a, lan.address_of(b))
    assert _udp_arrivals(b) > before_b


def test_latency_adds_to_the_round_trip(net):
    _, _, a, b, lan = net
    base = statistics.median(ping(a, "b.lan", count=9, interval=0.1)[1])
    lan.add_directional_latency(a, b, 100)  # one way: +100 ms per round trip
    try:
        one_way = statistics.median(ping(a, "b.lan", count=9, interval=0.1)[1])
    finally:
        lan.reset()
    lan.add_latency(50)  # whole bridge: every frame, so request and reply: +100 ms
    try:
        whole = statistics.median(ping(a, "b.lan", count=9, interval=0.1)[1])
    finally:
        lan.reset()
    assert 90 <= one_way - base <= 130, (base, one_way)
    assert 90 <= whole - base <= 130, (base, whole)


def test_drop_rate_is_seeded_and_repeatable(net):
    _, _, a, b, lan = net
    lan.directional_drop_rate(a, b, 30)
    try:
        _, _, got1 = ping(a, "b.lan", count=1000, interval=0.005, wait=2)
        lan.directional_drop_rate(a, b, 30)  # a new policy restarts the seeded generators
        _, _, got2 = ping(a, "b.lan", count=1000, interval=0.005, wait=2)
    finally:
        lan.reset()
    lost1 = set(range(1000)) - got1
    lost2 = set(range(1000)) - got2
    assert 260 <= len(lost1) <= 340, len(lost1)
    assert lost1 == lost2


def test_bandwidth_cap_holds(net):
    _, _, a, b, lan = net
    cap = 2_000_000  # bits/s
    lan.bandwidth_limit(cap)
    listener = b.run_async("nc -l -p 5001 > /dev/null")
    try:
        time.sleep(0.5)
        port = lan.port_of("b")
        sender = a.run_async("dd if=/dev/zero bs=1k count=1200 2>/dev/null | nc b.lan 5001")
        samples = []
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            samples.append((time.monotonic(), port.rx_bytes))
            if sender.status() != "running" and len(samples) > 2 and samples[-1][1] == samples[-2][1]:
                break
            time.sleep(0.25)
    finally:
        lan.reset()
        for p in (locals().get("sender"), listener):
            try:
                p.kill()
            except Exception:
                pass
    # The steady part of the transfer: from 1 s in until the bytes stop growing.
    moving = [(t, n) for (t, n), (_, n2) in itertools.pairwise(samples) if n2 > n]
    assert len(moving) >= 8, samples
    (t1, n1), (t2, n2) = moving[3], moving[-1]
    rate = (n2 - n1) * 8 / (t2 - t1)
    assert abs(rate - cap) / cap <= 0.10, (rate, cap)


def test_isolation(net):
    _, _, a, b, lan = net
    lan.isolate(b)
    try:
        assert ping(a, "b.lan", count=2, wait=1)[0] != 0
        assert not lan.is_partitioned(a, b)
    finally:
        lan.unisolate(b)
    assert ping(a, "b.lan", count=2)[0] == 0


def test_link_down_is_carrier_loss_in_the_guest(net):
    _, _, a, b, _lan = net
    from provium.host.bridge import nic_of

    nic = nic_of(a, "lan")
    carrier = "cat /sys/class/net/eth0/carrier"
    assert a.run(carrier).stdout.strip() == b"1"
    nic.disconnect()
    try:
        assert a.run(carrier).stdout.strip() == b"0"
        assert ping(b, "a.lan", count=2, wait=1)[0] != 0
    finally:
        nic.reconnect()
    assert a.run(carrier).stdout.strip() == b"1"
    assert ping(b, "a.lan", count=2)[0] == 0


def test_capture_holds_the_icmp_packets(net, tmp_path):
    dpkt = pytest.importorskip("dpkt")
    _, _, a, _b, lan = net
    cap = lan.capture({"file": str(tmp_path / "lan.pcap")})
    try:
        assert ping(a, "b.lan", count=3)[0] == 0
        head = cap.next(2)
        assert head[:4] == b"\xd4\xc3\xb2\xa1"  # the pcap magic, little-endian
    finally:
        cap.close()
    with open(tmp_path / "lan.pcap", "rb") as f:
        pkts = [dpkt.ethernet.Ethernet(buf) for _, buf in dpkt.pcap.Reader(f)]
    icmp = [p for p in pkts if isinstance(p.data, dpkt.ip.IP) and isinstance(p.data.data, dpkt.icmp.ICMP)]
    requests = [p for p in icmp if p.data.data.type == dpkt.icmp.ICMP_ECHO]
    replies = [p for p in icmp if p.data.data.type == dpkt.icmp.ICMP_ECHOREPLY]
    assert len(requests) == 3 and len(replies) == 3


def test_lab_snapshot_restores_the_network(net):
    _, lab, a, b, lan = net
    lan.partition("a", "ghost")  # graph state that must come back
    lan.add_latency(5)
    try:
        snap = lab.snapshot()
    finally:
        lan.reset()
    copy = lab.lab("copy")
    try:
        vms = copy.restore(snap)
        br = copy.find_bridge("lan")
        assert br is not None and br is not lan
        assert br.members() == ["a", "b"] and br.is_partitioned("a", "ghost") and br.latency_ms() == 5
        ca = vms["a"]
        code, rtts, _ = ping(ca, "b.lan", count=3)
        assert code == 0 and min(rtts) >= 10  # 5 ms each way, through the restored bridge
        assert br.port_of("b").counters()["rx_packets"] > 0  # the copy's own switch ports
    finally:
        copy.close()
        snap.delete()


def test_vm_restore_needs_the_same_bridges(net, tmp_path):
    s, lab, a, _, lan = net
    from provium.host.snapshot import SnapshotError

    snap = a.snapshot(str(tmp_path / "a.snap"))
    other = lab.create_vm("lonely", "linux")
    try:
        with pytest.raises(SnapshotError, match=r"NICs on bridges \[lan\] but the VM is attached to \[\]"):
            other.restore(snap)
    finally:
        other.close()
        lab.remove(other)  # a shut-down member would make a later lab:snapshot refuse


def test_uplink_reaches_the_host_loopback_and_nothing_else(net):
    import http.server
    import socketserver
    import threading

    _, _, a, _, lan = net

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the host\n")

        def log_message(self, *args):
            pass

    srv = socketserver.TCPServer(("127.0.0.1", 0), Hello)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    get = "(printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 3 {} {}"
    try:
        lan.enable_uplink({"ports": {80: port}})
        assert lan.uplink_address() == str(list(lan.subnet.hosts())[1])
        r = a.run(get.format("host.lan", 80), timeout=30)
        assert b"hello from the host" in r.stdout, r
        # Not forwarded: the same host port on the uplink's gateway address, another port.
        r = a.run(get.format(str(list(lan.subnet.hosts())[0]), port), timeout=30)
        assert b"hello" not in r.stdout
        r = a.run(get.format("host.lan", 81), timeout=30)
        assert b"hello" not in r.stdout
    finally:
        lan.disable_uplink()
        srv.shutdown()
        srv.server_close()
    assert lan.uplink_address() is None
    r = a.run(get.format("host.lan", 80), timeout=30)
    assert b"hello" not in r.stdout


def test_hot_plugged_nic_on_a_running_guest(net, pair, tmp_path):
    _, lab, a, b, _ = net
    pair.spoiled = True  # hot-plugged NICs stay: these VMs cannot be snapshotted any more
    from provium.host.bridge import nic_of
    from provium.host.snapshot import SnapshotError

    wan = lab.bridge("wan", {"subnet": "10.78.0.0/24"})
    wan.attach([a, b])  # both are running: q35 PCIe hot-plug
    code, rtts, _ = ping(a, "b.wan", count=3)
    assert code == 0, rtts
    assert nic_of(a, "wan").counters()["rx_packets"] > 0
    assert b"10.78.0." in a.run("ip -4 addr").stdout
    with pytest.raises(SnapshotError, match="hot-plugged"):
        a.snapshot(str(tmp_path / "a.snap"))

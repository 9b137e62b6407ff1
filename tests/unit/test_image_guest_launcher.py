"""The in-guest launcher (provium.agent.guest): port discovery and host-disconnect handling."""

import os
import threading
import time

from provium.agent import guest


def test_find_port_by_name(tmp_path):
    ports, dev = tmp_path / "virtio-ports", tmp_path / "dev"
    ports.mkdir()
    dev.mkdir()
    assert guest.find_port("org.provium.agent", str(ports), str(dev)) is None
    for entry, name in (("vport0p1", "org.qemu.guest_agent.0"), ("vport1p1", "org.provium.agent")):
        (ports / entry).mkdir()
        (ports / entry / "name").write_text(name + "\n")
    # named in sysfs, but devtmpfs has not created the node yet: not ready
    assert guest.find_port("org.provium.agent", str(ports), str(dev)) is None
    (dev / "vport1p1").touch()
    assert guest.find_port("org.provium.agent", str(ports), str(dev)) == f"{dev}/vport1p1"
    assert guest.find_port("other", str(ports), str(dev)) is None
    assert guest.find_port("x", str(tmp_path / "absent"), str(dev)) is None


def test_reader_returns_data_then_eof_once_the_peer_is_gone():
    r, w = os.pipe()
    reader = guest.PortReader(r)
    os.write(w, b"abc")
    assert reader.read(10) == b"abc"

    def later():
        time.sleep(0.05)
        os.write(w, b"late")

    t = threading.Thread(target=later)
    t.start()
    assert reader.read(10) == b"late"  # blocks until data, no spurious EOF
    t.join()
    os.close(w)
    started = time.monotonic()
    assert reader.read(10) == b""  # POLLHUP persists past the grace period: EOF
    assert time.monotonic() - started >= guest.EOF_GRACE * 0.9
    os.close(r)


def test_writer_writes_everything():
    r, w = os.pipe()
    data = os.urandom(200_000)  # more than a pipe takes in one write
    got = bytearray()

    def drain():
        while len(got) < len(data):
            got.extend(os.read(r, 65536))

    t = threading.Thread(target=drain)
    t.start()
    assert guest.PortWriter(w).write(data) == len(data)
    t.join()
    assert bytes(got) == data
    os.close(r)
    os.close(w)


def test_wait_for_init_waits_while_the_init_is_setting_up(tmp_path):
    pending = tmp_path / "provium-init-pending"
    started = time.monotonic()
    guest.wait_for_init(str(pending), limit=5)  # no such file: an initrd that does not announce its setup
    assert time.monotonic() - started < 1
    pending.write_text("x")
    threading.Timer(0.2, pending.unlink).start()
    started = time.monotonic()
    guest.wait_for_init(str(pending), limit=5)
    assert 0.15 <= time.monotonic() - started < 4


def test_wait_for_init_gives_up_and_says_so(tmp_path, capsys):
    pending = tmp_path / "provium-init-pending"
    pending.write_text("x")
    guest.wait_for_init(str(pending), limit=0.1)
    assert "still there" in capsys.readouterr().err

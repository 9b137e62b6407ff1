"""Disks on a real guest: the guest's kernel sees host-side writes, injected faults, a
power cut, hot-plug and unplug; the host sees the guest's writes.  One VM for the module."""

import os
import shutil
import time

import pytest
from qemu_util import needs_qemu

from provium.host.disk import DiskError

pytestmark = [pytest.mark.qemu, needs_qemu]


def _dev(vm, disk_id, present=True, timeout=20.0):
    """The guest's /dev/vdX whose serial is `disk_id` (waits for it to (dis)appear)."""
    deadline = time.monotonic() + timeout
    while True:
        r = vm.run("for d in /sys/block/vd*; do [ -e $d/serial ] && echo $(basename $d) $(cat $d/serial); done")
        found = dict(line.split(" ", 1)[::-1] for line in r.stdout.decode().splitlines() if " " in line)
        if (disk_id in found) == present:
            return f"/dev/{found[disk_id]}" if present else None
        if time.monotonic() > deadline:
            raise AssertionError(f"disk {disk_id} {'never appeared' if present else 'never went'}: {found}")
        time.sleep(0.2)


# The guest reads and writes whole 4 KiB blocks with O_DIRECT, so each dd is one request
# to the disk (no page cache in between); block b is sectors 8b..8b+7.
def _dd_read(vm, dev, block, count=1):
    return vm.run(f"dd if={dev} bs=4096 skip={block} count={count} iflag=direct 2>/tmp/dd.err; "
                  "s=$?; cat /tmp/dd.err >&2; exit $s")


def _dd_write(vm, dev, block, text, flags="oflag=direct"):
    # busybox dd drops O_DIRECT for a short input record: pad the block in a file first
    return vm.run(f"printf '{text}' > /tmp/b && dd if=/tmp/b of=/tmp/b4k bs=4096 count=1 conv=sync 2>/dev/null && "
                  f"dd if=/tmp/b4k of={dev} bs=4096 seek={block} count=1 conv=notrunc {flags}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("disks")
    plain = d / "plain.img"
    with open(plain, "wb") as f:
        f.write(b"PLAINIMG" + bytes((4 << 20) - 8))
    hot = d / "hot.img"
    with open(hot, "wb") as f:
        f.write(b"HOTBYTES" + bytes((2 << 20) - 8))
    fs = d / "fs.img"
    with open(fs, "wb") as f:
        f.truncate(16 << 20)
    return {"plain": str(plain), "hot": str(hot), "fs": str(fs)}


@pytest.fixture
def vm(vm_factory, images):
    # One VM for the module; a test that changes its disks puts them back.
    return vm_factory.shared("disks", "linux", {"disks": [
        {"id": "data", "scratch": "8M", "mediated": True},
        {"id": "plain", "path": images["plain"]},
        {"id": "ro", "scratch": "1M", "mediated": True, "readonly": True}]})


def test_host_and_guest_see_each_others_writes(vm):
    data = vm.disk("data")
    dev = _dev(vm, "data")
    data.write_sectors(8, b"HOSTDATA")
    assert _dd_read(vm, dev, 1).stdout[:9] == b"HOSTDATA\0"
    r = _dd_write(vm, dev, 2, "GUESTDATA")
    assert r.exit_code == 0, r.stderr
    assert data.read_sectors(16, 1)[:10] == b"GUESTDATA\0"
    # an unmediated disk: the host reads the very file the guest writes
    pdev = _dev(vm, "plain")
    assert _dd_read(vm, pdev, 0).stdout[:8] == b"PLAINIMG"
    assert _dd_write(vm, pdev, 3, "RAWWRITE", "oflag=direct conv=fsync").exit_code == 0
    assert vm.disk("plain").read_sectors(24, 1)[:8] == b"RAWWRITE"


def test_readonly_disk_refuses_guest_writes(vm):
    dev = _dev(vm, "ro")
    assert _dd_read(vm, dev, 0).exit_code == 0
    r = _dd_write(vm, dev, 0, "NO")
    assert r.exit_code != 0, r
    vm.disk("ro").write_sectors(0, b"host")  # the test's own view still writes
    assert _dd_read(vm, dev, 0).stdout[:4] == b"host"


def test_eio_read_and_write_reach_the_guest(vm):
    data = vm.disk("data")
    dev = _dev(vm, "data")
    data.fault_inject("eio_read")
    r = _dd_read(vm, dev, 100)
    assert r.exit_code != 0 and b"Input/output error" in r.stderr, r
    data.clear_faults()
    assert _dd_read(vm, dev, 100).exit_code == 0
    data.fault_inject("eio_write")
    r = _dd_write(vm, dev, 101, "NOPE")
    assert r.exit_code != 0 and b"Input/output error" in r.stderr, r
    data.clear_faults()
    assert _dd_write(vm, dev, 101, "YES").exit_code == 0
    # a sector range: only those sectors fail
    data.fail_range(200, 8)  # block 25
    assert _dd_read(vm, dev, 24).exit_code == 0
    assert _dd_read(vm, dev, 25).exit_code != 0
    data.clear_faults()


def test_slow_makes_reads_slower(vm):
    data = vm.disk("data")
    dev = _dev(vm, "data")

    def timed():
        t = time.monotonic()
        assert _dd_read(vm, dev, 300, 1).exit_code == 0
        return time.monotonic() - t

    base = min(timed() for _ in range(2))
    data.fault_inject("slow", {"delay": "400ms"})
    slow = timed()
    data.clear_faults()
    assert slow >= 0.4 and slow > base + 0.3, (base, slow)


def test_power_cut_loses_unflushed_keeps_flushed(vm):
    data = vm.disk("data")
    dev = _dev(vm, "data")
    assert _dd_write(vm, dev, 40, "FLUSHED", "oflag=direct conv=fsync").exit_code == 0
    assert _dd_write(vm, dev, 48, "UNFLUSHED").exit_code == 0  # O_DIRECT, no flush: in the disk's cache
    assert data.read_sectors(48 * 8, 1)[:9] == b"UNFLUSHED"
    assert data.power_cut() == 8
    assert data.read_sectors(40 * 8, 1)[:7] == b"FLUSHED"
    assert data.read_sectors(48 * 8, 1) == bytes(512)
    assert _dd_read(vm, dev, 48).stdout == bytes(4096)  # the guest agrees
    with pytest.raises(DiskError, match="not mediated"):
        vm.disk("plain").power_cut()


def test_hot_attach_and_detach(vm, images):
    hot = vm.attach_disk({"id": "hot", "image": images["hot"]})
    dev = _dev(vm, "hot")
    assert _dd_read(vm, dev, 0).stdout[:8] == b"HOTBYTES"
    hot.detach()
    assert hot.is_detached()
    assert _dev(vm, "hot", present=False, timeout=2) is None


def test_filesystem_survives_detach_and_attach(vm, images):
    fs = vm.attach_disk({"id": "fs", "image": images["fs"], "mediated": True})
    dev = _dev(vm, "fs")
    r = vm.run(f"mke2fs -q {dev} && mkdir -p /mnt/fs && mount -t ext2 {dev} /mnt/fs && "
               "echo kept > /mnt/fs/note && umount /mnt/fs")
    assert r.exit_code == 0, r.stderr
    fs.detach()
    _dev(vm, "fs", present=False, timeout=2)
    fs2 = vm.attach_disk({"id": "fs", "image": images["fs"], "mediated": True})
    dev = _dev(vm, "fs")
    r = vm.run(f"mount -t ext2 {dev} /mnt/fs && cat /mnt/fs/note && umount /mnt/fs")
    assert (r.exit_code, r.stdout) == (0, b"kept\n"), r.stderr
    fs2.detach()


def test_boot_disk_detaches_too(vm, images):
    vm.disk("plain").detach()
    try:
        assert _dev(vm, "plain", present=False, timeout=2) is None
        assert os.path.exists(vm.disk("plain").image)  # the user's image stays
    finally:
        vm.attach_disk({"id": "plain", "image": images["plain"]})  # back, for the tests that read it
        _dev(vm, "plain")


def test_disks_in_a_snapshot(vm_factory, images, tmp_path):
    """Boot disks travel with a VM snapshot: a restored VM sees the disks as they were."""
    plain = tmp_path / "plain.img"  # its own copy: the module's VM may hold the shared one's write lock
    shutil.copyfile(images["plain"], plain)
    src = vm_factory.create("disksnap")
    src.boot({"disks": [{"id": "m", "scratch": "4M", "mediated": True}, {"id": "p", "path": str(plain)}]})
    try:
        with pytest.raises(Exception, match="hot-plugged"):
            src.attach_disk({"id": "extra", "image": images["hot"]})
            src.snapshot(str(tmp_path / "refused.snap"))
        src.disk("extra").detach()
        assert _dd_write(src, _dev(src, "m"), 5, "BEFORE", "oflag=direct conv=fsync").exit_code == 0
        snap = src.snapshot(str(tmp_path / "s.snap"))
        assert _dd_write(src, _dev(src, "m"), 5, "AFTER!", "oflag=direct conv=fsync").exit_code == 0
        other = vm_factory.create("disksnap2")
        other.restore(snap)
        try:
            m = other.disk("m")
            assert m.read_sectors(40, 1)[:6] == b"BEFORE"
            assert _dd_read(other, _dev(other, "m"), 5).stdout[:6] == b"BEFORE"
            m.fault_inject("eio_read")  # still mediated: faults reach the restored guest
            assert _dd_read(other, _dev(other, "m"), 6).exit_code != 0
            m.clear_faults()
            other.disk("p").detach()     # the restored VM knows its disks' devices
            assert _dev(other, "p", present=False, timeout=2) is None
        finally:
            other.shutdown()
        assert src.disk("m").read_sectors(40, 1)[:6] == b"AFTER!"  # the source's own disk is untouched
        snap.delete()
        assert not os.path.exists(snap.path + ".disks")
    finally:
        src.shutdown()



def test_disk_images_are_copied_while_the_guest_is_stopped(vm_factory, tmp_path, monkeypatch):
    """A snapshot copies the disk images while the guest is stopped, so a guest writing
    during the snapshot cannot leave disks older than the memory saved with them."""
    from provium.host import disksnap
    from provium.host import snapshot as snapshot_mod

    disks_hook = snapshot_mod._VM_HOOKS["disks"]
    seen = {}

    class CheckedCopy:  # after the copy, waits, then compares the copy with the live image
        def save(self, vm, path):
            data = disks_hook.save(vm, path)
            time.sleep(0.5)  # a running guest writes a few more counters meanwhile
            with open(vm.disk("w").image, "rb") as live, open(disksnap.disks_dir(path) / "0.img", "rb") as saved:
                seen["live"], seen["saved"] = live.read(8), saved.read(8)
            return data

        def restore(self, vm, data, spec, path):
            return disks_hook.restore(vm, data, spec, path)

    src = vm_factory.create("disktear")
    src.boot({"disks": [{"id": "w", "scratch": "1M"}]})
    try:
        dev = _dev(src, "w")
        src.run(f"(i=0; while true; do i=$((i+1)); printf '%08d' $i > /tmp/c; "
                f"dd if=/tmp/c of={dev} bs=512 count=1 conv=notrunc,fsync 2>/dev/null; done) >/dev/null 2>&1 &")
        time.sleep(1)
        monkeypatch.setitem(snapshot_mod._VM_HOOKS, "disks", CheckedCopy())
        snap = src.snapshot(str(tmp_path / "tear.snap"))
        snap.delete()
    finally:
        src.shutdown()
    assert seen["saved"].isdigit() and seen["live"] == seen["saved"], seen

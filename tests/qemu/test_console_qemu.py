"""The guest's serial console on a real guest: the boot log from its first byte,
`expect` on kernel and guest lines, streams, and writes reaching the shell the
default initramfs keeps on ttyS0.  One VM for the module (`vm_factory.shared`:
the test that shuts it down leaves a replacement to any test after it)."""

import time

import pytest
from qemu_util import needs_qemu

from provium.host import StreamTimeout

pytestmark = [pytest.mark.qemu, needs_qemu]


@pytest.fixture
def vm(vm_factory):
    # the profile's `quiet` hides the kernel's lines
    return vm_factory.shared("con", "linux", {"kernel_cmdline_append": "loglevel=7"})


def test_log_holds_the_boot_from_its_start(vm):
    log = vm.console().read_log()
    # The kernel's very first printk line, not just a tail.
    assert 0 <= log.find(b"Linux version") < 200, log[:300]
    assert b"Kernel command line:" in log and b"loglevel=7" in log
    assert b"BusyBox" in log  # ... up to the shell on ttyS0


def test_expect_finds_kernel_and_guest_lines(vm):
    c = vm.console()
    assert c.expect("Linux version", "5s") == "Linux version"  # printed before the call
    vm.run("echo provium-marker-$((6*7)) > /dev/console")
    assert c.expect("provium-marker-42", "20s") == "provium-marker-42"
    with pytest.raises(StreamTimeout, match=r"Console.expect timed out waiting for `never-printed` after 0.2s "
                                            r"\(last console bytes: "):
        c.expect("never-printed", "200ms")


def test_write_reaches_the_serial_shell_and_streams_fan_out(vm):
    c = vm.console()
    a, b = c.read(), c.read()  # two readers and a writer at once: one connection to QEMU
    try:
        assert vm.open_stream_count() == 2
        assert vm.open_resources()[1][0].kind == "console_read"
        with pytest.raises(Exception, match=r"2 open stream\(s\)[\s\S]*console_read\(\"/"):
            vm.snapshot()  # an open console stream blocks a snapshot, naming itself
        c.write(b"echo from-the-host-$((40+2))\n", {"timeout": "5s"})
        got = a.read_until(b"from-the-host-42", "20s")
        assert got.endswith(b"from-the-host-42")
        b.expect("from-the-host-42", "5s")
        a.drain("300ms")  # the prompt after the echo
        t0 = time.monotonic()
        assert a.next() is None and time.monotonic() - t0 < 1  # a bare next only looks (50 ms)
        with pytest.raises(StreamTimeout, match="ConsoleStream.read_until timed out waiting for `zzz`"):
            a.read_until("zzz", "100ms")
    finally:
        a.close()
        b.close()
    assert vm.open_stream_count() == 0
    assert a.eof() and a.next() is None


def test_streams_see_eof_when_the_vm_goes(vm):
    # Shuts the shared VM down: a test after it gets a fresh one from vm_factory.shared.
    v = vm
    s = v.console().read()
    v.shutdown()
    with pytest.raises(Exception, match="console EOF|console closed"):
        s.read_until("never", "5s")
    assert b"Linux version" in v.console().read_log()  # kept after shutdown

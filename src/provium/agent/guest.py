"""The agent's life inside a VM, after /sbin/provium-agent has started Python.

Find our virtio-serial port (no udev in the guest: scan
/sys/class/virtio-ports/vport*/name for the port name and open the matching
/dev/vportNpM, polling until the driver has created it), then serve the host
on it.  When the host goes away (QEMU's chardev loses its client: the port
reads EOF and polls POLLHUP) wait for the next host and serve again on the
same descriptor, with the same agent state; a new `hello` re-handshakes.  That
is how the host gets back in after a reset, a restore, or its own restart.
"""

from __future__ import annotations

import os
import select
import sys
import time

# At the top, not in main(): provium_boot.run imports this module with the garbage
# collector paused (see image/guest_boot.py), and these are most of the agent's imports.
from .server import serve
from .state import AgentState

PORT_NAME = "org.provium.agent"
PORTS_DIR = "/sys/class/virtio-ports"
RNG_SEED = "/sys/firmware/qemu_fw_cfg/by_name/opt/provium/rng-seed/raw"
FIND_POLL = 0.01  # the port appears once virtio_console has probed; check often
RECONNECT_POLL = 0.02
# A 0-byte read can race with the "host connected" event the driver processes on its
# own work queue: only call it EOF if the port still looks disconnected after this.
EOF_GRACE = 0.1
OOM_POLL = 0.05  # chain mode: how often to look for /proc (the guest's init mounts it)
# In the built-in `linux` image until its /init has set the guest up (image/initramfs.py).
INIT_PENDING = "/run/provium-init-pending"
INIT_POLL = 0.01
INIT_WAIT = 60.0  # then serve anyway, and say so: a guest without its drivers beats no guest
SWITCH_INTERVAL = 0.0005  # the GIL's (see main)


def log(message: str) -> None:
    try:
        sys.stderr.write(f"provium-agent[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def find_port(name: str = PORT_NAME, ports_dir: str = PORTS_DIR, dev_dir: str = "/dev") -> str | None:
    """/dev path of the virtio-serial port called `name`, or None if not (yet) there."""
    try:
        entries = sorted(os.listdir(ports_dir))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"{ports_dir}/{entry}/name", "rb") as f:
                if f.read().strip().decode(errors="replace") != name:
                    continue
        except OSError:
            continue
        dev = f"{dev_dir}/{entry}"
        if os.path.exists(dev):
            return dev
    return None


def wait_for_port(name: str = PORT_NAME, ports_dir: str = PORTS_DIR) -> str:
    announced = time.monotonic() + 10
    while True:
        dev = find_port(name, ports_dir)
        if dev is not None:
            return dev
        if time.monotonic() > announced:
            log(f"still waiting for virtio-serial port `{name}` under {ports_dir} "
                "(is virtio_console loaded and /sys, /dev mounted?)")
            announced = time.monotonic() + 30
        time.sleep(FIND_POLL)


def _hung_up(fd: int, timeout_ms: int = 0) -> tuple[bool, bool]:
    """(host disconnected, data readable) for the port."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    events = 0
    for _, ev in p.poll(timeout_ms):
        events |= ev
    return bool(events & select.POLLHUP), bool(events & select.POLLIN)


class PortReader:
    """Blocking reads from the port; 0 bytes only once the host has really gone."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def readinto(self, buf) -> int:
        """Read what is there straight into `buf` (the port hands over at most one
        of its buffers per read, so no large temporary is allocated per call)."""
        while True:
            n = os.readv(self.fd, [buf])
            if n or self._gone():
                return n

    def readv(self, bufs) -> int:
        """Fill `bufs` in order in one system call, as far as data comes (the port
        hands over one 4 KiB buffer per read; the kernel loops over the segments)."""
        while True:
            n = os.readv(self.fd, bufs)
            if n or self._gone():
                return n

    def read(self, n: int = 65536) -> bytes:
        while True:
            data = os.read(self.fd, max(1, min(n, 1 << 20)))
            if data:
                return data
            if self._gone():
                return b""

    def _gone(self) -> bool:
        deadline = time.monotonic() + EOF_GRACE
        while True:
            hup, readable = _hung_up(self.fd)
            if readable or not hup:
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.01)


class PortWriter:
    """Whole writes: the port may accept less than asked in one write()."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def sendall(self, data) -> None:
        """Write all of `data` (the session calls this directly: one loop, no flush)."""
        fd = self.fd
        n = os.write(fd, data)
        if n < len(data):  # the port takes at most 32 KiB per write
            view = memoryview(data)
            while n < len(view):
                n += os.write(fd, view[n:])

    def write(self, data) -> int:
        self.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


def wait_for_host(fd: int) -> None:
    """Return once a host is connected to the port (or has already sent data)."""
    while True:
        hup, readable = _hung_up(fd, 1000)
        if readable or not hup:
            return
        time.sleep(RECONNECT_POLL)


def wait_for_init(pending: str = INIT_PENDING, limit: float = INIT_WAIT) -> None:
    """Wait while the guest's init says it is still setting the guest up.

    We start beside the init, not after it, so that Python's start overlaps the
    init's driver loading; the host must still not get a guest whose disks, NICs
    or hostname are not there yet.  An initrd without the file: no wait.
    """
    deadline = time.monotonic() + limit
    while os.path.exists(pending):
        if time.monotonic() > deadline:
            log(f"the guest's init has not finished setting up after {limit:.0f} s ({pending} is still there); "
                "serving anyway")
            return
        time.sleep(INIT_POLL)


def _stdin_to_devnull() -> None:
    # Started by PID 1 with the console as stdin: never compete with a console shell.
    try:
        null = os.open("/dev/null", os.O_RDWR)
    except OSError:
        return
    os.dup2(null, 0)
    if null != 0:
        os.close(null)


def _mix_rng_seed() -> None:
    """Feed the boot's `rng_seed` (fw_cfg, when given) into the guest's entropy pool."""
    try:
        with open(RNG_SEED, "rb") as f:
            seed = f.read()
        with open("/dev/urandom", "wb") as f:
            f.write(seed)
    except OSError:
        pass


def _milestone(what: str) -> None:
    """With PROVIUM_AGENT_DEBUG set (e.g. =1 on the kernel cmdline), log start-up timing."""
    if os.environ.get("PROVIUM_AGENT_DEBUG", "0") != "0":
        try:
            with open("/proc/uptime") as f:
                up = f.read().split()[0]
        except OSError:
            up = "?"
        log(f"{what} at uptime {up} s")


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up(name: str = "lo") -> bool:
    """Bring the loopback interface up (the kernel then gives it 127.0.0.1/8).

    A minimal initrd never does (no ifupdown), so a daemon listening on
    127.0.0.1 would be unreachable from inside the guest.  Done here, in the
    agent, it holds in chain and standalone mode alike and costs no process
    start: one ioctl pair.  True if it is up.
    """
    # _socket, not socket: socket.py builds its enums and imports selectors at
    # import time, a measurable share of the agent's start under TCG; an ioctl
    # needs nothing but the descriptor.
    import _socket
    import fcntl
    import struct

    try:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            ifr = struct.pack("16sh22x", name.encode(), 0)
            flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr)[:18])[1]
            if not flags & IFF_UP:
                fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", name.encode(), flags | IFF_UP))
        finally:
            s.close()
        return True
    except OSError as exc:
        log(f"could not bring `{name}` up: {exc}")
        return False


def protect_from_oom(wait: float = 60.0) -> None:
    """Make the guest's OOM killer pick anything but us: a command that eats the
    guest's memory then dies, not the agent (the host would lose the guest).  Our
    children get the default score back (children.unprotect).

    In chain mode the guest's init mounts /proc after we start: until it is there
    a thread polls for it (for at most `wait` seconds) and then protects us."""
    if _write_oom_adj():
        return
    import threading

    def poll() -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(OOM_POLL)
            if _write_oom_adj():
                return
        log("could not protect the agent from the OOM killer: /proc never appeared")

    threading.Thread(target=poll, name="oom-protect", daemon=True).start()


def _write_oom_adj() -> bool:
    """True when done (protected, or failed for good); False while /proc is missing."""
    from . import base

    # The flag first: a child started from now on gets 0 written (harmless if we are
    # not -1000 yet); one started before inherits our 0 anyway.
    base.OOM_PROTECTED = True
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
        return True
    except FileNotFoundError:
        base.OOM_PROTECTED = False
        return False  # /proc not mounted yet
    except OSError as exc:
        base.OOM_PROTECTED = False
        log(f"could not protect the agent from the OOM killer: {exc}")
        return True


def main() -> int:
    if os.environ.get("PROVIUM_AGENT_DEBUG", "0") != "0":
        try:
            with open("/proc/self/stat") as f:  # field 22: start time in clock ticks since boot
                ticks = int(f.read().rsplit(")", 1)[1].split()[19])
            log(f"process started at uptime {ticks / os.sysconf('SC_CLK_TCK'):.2f} s")
        except (OSError, ValueError, IndexError):
            pass
    _milestone("imported the agent")
    protect_from_oom()
    loopback_up()
    name = os.environ.get("PROVIUM_AGENT_PORT_NAME", PORT_NAME)
    dev = wait_for_port(name)
    _milestone(f"found {dev}")
    wait_for_init()
    _milestone("the guest's init is done")
    _stdin_to_devnull()
    _mix_rng_seed()
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    # A thread woken while another runs Python waits up to the switch interval
    # for the GIL (5 ms by default); a streamed command output hands every chunk
    # from the collecting thread to the sending one, so that wait was paid per chunk.
    sys.setswitchinterval(SWITCH_INTERVAL)
    state = AgentState()
    while True:
        wait_for_host(fd)
        _milestone("host connected")
        try:
            why = serve(PortReader(fd), PortWriter(fd), state)
        except Exception as exc:  # never let one bad session end the agent
            log(f"session failed: {type(exc).__name__}: {exc}")
            why = "error"
        if why != "eof":
            log(f"host connection ended ({why}); waiting for the host to reconnect")
        time.sleep(RECONNECT_POLL)


if __name__ == "__main__":
    sys.exit(main())

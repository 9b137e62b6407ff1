"""A bridge's uplink: QEMU user-mode networking (slirp) as one more port of the switch.

What the guests get: on an addressed bridge, `<subnet>.2` (named `host.<bridge>`)
answers on the forwarded ports, each relayed to the same (or the mapped) port on
the host's 127.0.0.1.  Nothing else: slirp runs with `restrict=on`, so the guests
cannot open any other connection through it (no outbound NAT, no DNS relay),
and each forward is a `cmd:` that connects to 127.0.0.1 only.

How: one `qemu-system-x86_64 -M none` process (no guest, no CPU) holding a
`user` netdev and a `stream` netdev (the switch's port) joined by a hub.  It is
spawned from the switch's thread with PR_SET_PDEATHSIG (it dies with the runner)
and stopped by `Uplink.stop()` (bridge close, `disable_uplink`, switch close).
Written here rather than as a Python NAT because slirp is a complete, well-kept
TCP/IP stack that QEMU already ships.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from pathlib import Path

from .errors import NetError
from .graph import UPLINK, BridgeGraph
from .switch import Port, Switch

CONNECT_TIMEOUT = 10.0


def _busybox() -> str:
    from ..image.initramfs import find_busybox

    return str(find_busybox())


class Uplink:
    def __init__(self, switch: Switch, graph: BridgeGraph, subnet: ipaddress.IPv4Network,
                 forwards: dict[int, int], qemu: str = "qemu-system-x86_64") -> None:
        self.switch = switch
        self.graph = graph
        self.subnet = subnet
        self.forwards = dict(forwards)
        hosts = list(subnet.hosts())
        self.gateway = str(hosts[0])
        self.address = str(hosts[1])
        self.qemu = qemu
        self.port: Port | None = None
        self.proc: subprocess.Popen | None = None

    def argv(self, socket_path: str) -> list[str]:
        bb = _busybox()
        user = (f"user,id=up,restrict=on,net={self.subnet},host={self.gateway},"
                f"dhcpstart={self.subnet[-2]}")
        for gport, hport in sorted(self.forwards.items()):
            user += f",guestfwd=tcp:{self.address}:{gport}-cmd:{bb} nc 127.0.0.1 {hport}"
        return [self.qemu, "-M", "none", "-nodefaults", "-display", "none", "-no-user-config",
                "-netdev", user,
                "-netdev", f"stream,id=sw,server=off,addr.type=unix,addr.path={socket_path}",
                "-netdev", "hubport,id=h0,hubid=0,netdev=up",
                "-netdev", "hubport,id=h1,hubid=0,netdev=sw"]

    def start(self) -> None:
        qemu = shutil.which(self.qemu)
        if qemu is None:
            raise NetError(f"bridge:enable_uplink: `{self.qemu}` not found on PATH (the uplink is QEMU's user-mode "
                           "network)\n  → apt-get install qemu-system-x86")
        self.qemu = qemu
        port = self.switch.add_port(self.graph, UPLINK, "52:55:00:00:00:00", f"uplink-{self.graph.name}")
        self.port = port
        root = self.switch.root or Path("/tmp")
        err = root / f"uplink-{self.graph.name}.stderr"
        argv = self.argv(str(port.path))

        def spawn() -> subprocess.Popen:
            # From the switch's thread: PR_SET_PDEATHSIG follows the spawning thread.
            from ..vmm.qemu.process import spawn as qspawn

            return qspawn(argv, stderr_path=err, cwd=root)

        try:
            self.proc = self.switch.call(spawn)
        except OSError as exc:
            self.stop()
            raise NetError(f"bridge:enable_uplink: cannot start `{self.qemu}`: {exc}") from exc
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not port.connected.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                try:
                    said = err.read_text(errors="replace").strip()
                except OSError:
                    said = ""
                self.stop()
                raise NetError(f"bridge `{self.graph.name}`: the uplink did not start"
                               + (f"\nQEMU said: {said}" if said else ""))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            import os
            import signal

            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        port, self.port = self.port, None
        if port is not None:
            self.switch.remove_port(port)

"""The userspace switch: forwards guests' Ethernet frames between the ports of a bridge.

Every guest NIC is a QEMU `-netdev stream` unix-socket client; each port of the
switch is one listening unix socket (the path names the port, so no handshake is
needed).  On the wire a frame is a 4-byte big-endian length then the frame, and
we forward that record as it came (no re-encoding).

Why its own thread and event loop: the session's loop also carries every agent
call of the file; a flood of frames there would delay them, and a slow agent
reply would delay frames (latency accuracy).  A separate *process* would also
escape the GIL, but every graph change (partition, impairment, link) would then
be an IPC round trip and captures would have to be shipped back; measured here
(bench/switch.py) one thread forwards well over the 20k frames/s target while a
TCG guest produces a few thousand, so the thread is the simpler sufficient
choice.  The per-frame path avoids allocation where it can: records are slices
of what was read, writes are batched per destination per read, policies are
immutable snapshots read without a lock.

Impairments are deterministic: drop decisions come from a `random.Random`
seeded with (bridge seed, from, to, ethertype), one stream per direction of a
pair and per ethertype (so ARP chatter does not shift which IP packets are lost),
restarted whenever the bridge's policy changes.  Latency and jitter are
scheduled delivery on this loop (FIFO per pair: no reordering); bandwidth is a
serialising shaper per pair (a frame leaves when the previous one has been
"on the wire" for its bits), with a queue bounded to MAX_QUEUE_S of backlog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import runfiles
from .graph import BridgeGraph, Policy
from .pcap import PcapSink

log = logging.getLogger("provium.net")

MAX_FRAME = 65_550  # a jumbo virtio frame at most; longer lengths mean a broken peer
MAX_QUEUE_S = 0.5  # shaper backlog beyond which frames are dropped (tail drop)
PUMP_SLACK = 0.0002  # deliver frames due within this many seconds in one pump


class Port:
    """One NIC's attachment: the socket QEMU connects to, its counters and link."""

    __slots__ = (
        "bridge",
        "captures",
        "connected",
        "dropped",
        "errors",
        "mac",
        "name",
        "path",
        "pending",
        "rx_bytes",
        "rx_packets",
        "server",
        "starting",
        "transport",
        "tx_bytes",
        "tx_packets",
        "up",
    )

    def __init__(self, bridge: SwitchBridge, name: str, mac: str, path: Path) -> None:
        self.bridge = bridge
        self.name = name  # the member (VM) name, or graph.UPLINK
        self.mac = mac
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.server: asyncio.AbstractServer | None = None
        self.starting: asyncio.Future[Any] | None = None  # the server being created (add_port)
        self.connected = threading.Event()
        self.up = True  # False while "unplugged" (nic:disconnect)
        # Guest's point of view: rx = frames the switch delivered to it.
        self.rx_bytes = self.rx_packets = self.tx_bytes = self.tx_packets = 0
        self.errors = 0
        self.dropped = 0  # by impairments or filters, on frames this port sent
        self.pending: list[bytes] = []
        self.captures: list[PcapSink] = []

    def counters(self) -> dict[str, int]:
        return {"rx_bytes": self.rx_bytes, "rx_packets": self.rx_packets, "tx_bytes": self.tx_bytes,
                "tx_packets": self.tx_packets, "errors": self.errors, "dropped": self.dropped}


class _PairQueue:
    __slots__ = ("dst", "free_at", "items", "last")

    def __init__(self, dst: Port) -> None:
        self.dst = dst
        self.items: deque = deque()
        self.free_at = 0.0
        self.last = 0.0


class SwitchBridge:
    """The data path of one bridge (its ports, MAC table, queues, captures)."""

    def __init__(self, switch: Switch, graph: BridgeGraph) -> None:
        self.switch = switch
        self.graph = graph
        self.ports: list[Port] = []
        self.macs: dict[bytes, Port] = {}
        self.captures: list[PcapSink] = []
        self._dirty: set[Port] = set()
        self._queues: dict[tuple[str, str], _PairQueue] = {}
        self._rngs: dict[Any, random.Random] = {}
        self._rng_version = -1

    # ---- the per-frame path (switch thread only) ---------------------------------------

    def forward(self, port: Port, rec: bytes, pol: Policy, now: float) -> None:
        n = len(rec) - 4
        port.tx_packets += 1
        port.tx_bytes += n
        if not port.up:
            port.dropped += 1
            return
        if self.captures:
            for c in self.captures:
                c.add(rec, now)
        if port.captures:
            for c in port.captures:
                c.add(rec, now)
        src = rec[10:16]
        if self.macs.get(src) is not port:
            self.macs[src] = port
        targets: "list[Port] | tuple[Port]"
        if rec[4] & 1:
            targets = self.ports
        else:
            t = self.macs.get(rec[4:10])
            targets = (t,) if t is not None else self.ports
        for t in targets:
            if t is port or t.transport is None or not t.up:
                continue
            if pol.filtering and pol.blocks(port.name, t.name):
                port.dropped += 1
                continue
            if pol.impairing:
                imp = pol.impairment(port.name, t.name)
                if imp:
                    self._impaired(port, t, rec, imp, pol, now)
                    continue
            t.pending.append(rec)
            self._dirty.add(t)

    def flush(self) -> None:
        for t in self._dirty:
            self._write(t)
        self._dirty.clear()
        for c in self.captures:
            c.flush()
        for p in self.ports:
            if p.captures:
                for c in p.captures:
                    c.flush()

    def _write(self, t: Port) -> None:
        pend = t.pending
        if not pend:
            return
        t.pending = []
        tr = t.transport
        if tr is None:
            return
        for rec in pend:
            t.rx_bytes += len(rec) - 4
        t.rx_packets += len(pend)
        if t.captures:
            now = self.switch.loop.time()
            for c in t.captures:
                for rec in pend:
                    c.add(rec, now)
        tr.write(pend[0] if len(pend) == 1 else b"".join(pend))

    def _rng(self, key: Any, pol: Policy) -> random.Random:
        if pol.version != self._rng_version:
            self._rngs.clear()
            self._rng_version = pol.version
        r = self._rngs.get(key)
        if r is None:
            r = self._rngs[key] = random.Random(f"{pol.seed}|{self.graph.name}|{key}")
        return r

    def _impaired(self, port: Port, t: Port, rec: bytes, imp: Any, pol: Policy, now: float) -> None:
        if imp.drop_pct and self._rng((port.name, t.name, rec[16:18]), pol).random() * 100.0 < imp.drop_pct:
            port.dropped += 1
            return
        key = (port.name, t.name)
        q = self._queues.get(key)
        if q is None or q.dst is not t:
            q = self._queues[key] = _PairQueue(t)
        at = now
        if imp.bandwidth_bps:
            start = max(now, q.free_at)
            if start - now > MAX_QUEUE_S:
                port.dropped += 1
                return
            q.free_at = at = start + (len(rec) - 4) * 8.0 / imp.bandwidth_bps
        delay = imp.latency_ms
        if imp.jitter_ms:
            delay += self._rng(("jitter", port.name, t.name), pol).uniform(-imp.jitter_ms, imp.jitter_ms)
        if delay > 0:
            at += delay / 1000.0
        at = max(at, q.last)  # FIFO per pair: jitter never reorders
        q.last = at
        q.items.append((at, rec))
        if len(q.items) == 1:
            self.switch.loop.call_at(at, self._pump, q)

    def _pump(self, q: _PairQueue) -> None:
        loop = self.switch.loop
        now = loop.time()
        items = q.items
        t = q.dst
        while items and items[0][0] <= now + PUMP_SLACK:
            t.pending.append(items.popleft()[1])
        self._write(t)
        if items:
            loop.call_at(items[0][0], self._pump, q)

    # ---- ports (switch thread) ----------------------------------------------------------

    def drop_port(self, port: Port) -> None:
        if port in self.ports:
            self.ports.remove(port)
        for mac in [m for m, p in self.macs.items() if p is port]:
            del self.macs[mac]
        for k in [k for k, q in self._queues.items() if q.dst is port]:
            del self._queues[k]


class _PortProtocol(asyncio.Protocol):
    """One QEMU connection to a port: parse records and hand them to the bridge."""

    def __init__(self, port: Port) -> None:
        self.port = port
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        old = self.port.transport
        if old is not None and not old.is_closing():
            old.close()  # a new QEMU (restore) replaces the old connection
        self.transport = transport
        self.port.transport = transport
        self.port.connected.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.port.transport is self.transport:
            self.port.transport = None
            self.port.connected.clear()

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        port = self.port
        br = port.bridge
        pol = br.graph.policy
        now = br.switch.loop.time()
        n = len(data)
        off = 0
        while off + 4 <= n:
            ln = int.from_bytes(data[off:off + 4], "big")
            end = off + 4 + ln
            if ln < 14 or ln > MAX_FRAME:
                # Not a frame: the peer is broken.  Never trust a length from a guest.
                port.errors += 1
                log.warning("port %s of bridge %s sent a %d-byte frame: closing it", port.name,
                            br.graph.name, ln)
                if self.transport is not None:
                    self.transport.close()
                return
            if end > n:
                break
            br.forward(port, data[off:end], pol, now)
            off = end
        if off < n:
            self.buf = data[off:]
        br.flush()


def _sweep(parent: Path) -> None:
    """Remove switch scratch roots of provium processes that no longer exist."""
    runfiles.sweep_stale(parent, ("provium-net-",))


class Switch:
    """All bridges of one session.  Started on first use; `close()` stops everything."""

    def __init__(self, scratch_parent: str | None = None) -> None:
        self._parent = Path(scratch_parent or tempfile.gettempdir())
        self.root: Path | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._bridges: dict[int, SwitchBridge] = {}
        self._nports = 0
        self._closers: list[Callable[[], None]] = []
        self.closed = False

    # ---- life ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None:
            return
        if self.closed:
            from .errors import NetError

            raise NetError("the network switch of this session is closed")
        root = self._parent / f"provium-net-{os.getpid()}"
        if len(str(root)) > 80:  # unix socket paths are limited to 107 bytes
            root = Path("/tmp") / f"provium-net-{os.getpid()}"
        _sweep(root.parent)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root = root
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            try:
                self.loop.run_forever()
            finally:
                self.loop.close()

        self._thread = threading.Thread(target=serve, name="provium-switch", daemon=True)
        self._thread.start()
        ready.wait()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
        """Run `fn(*args)` on the switch thread and return its result."""
        self._start()
        if threading.current_thread() is self._thread:
            return fn(*args)

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                log.exception("switch teardown step failed")
        if self._thread is not None:
            def stop() -> None:
                for br in self._bridges.values():
                    for p in list(br.ports):
                        _close_port(p)
                    for c in br.captures:
                        c.close()
                self.loop.stop()

            self.loop.call_soon_threadsafe(stop)
            self._thread.join(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run `fn` at close (before the loop stops): uplink processes and the like."""
        self._closers.append(fn)

    # ---- bridges and ports (any thread) ------------------------------------------------

    def bridge(self, graph: BridgeGraph) -> SwitchBridge:
        self._start()
        with self._lock:
            br = self._bridges.get(id(graph))
            if br is None or br.graph is not graph:
                br = self._bridges[id(graph)] = SwitchBridge(self, graph)
            return br

    def forget_bridge(self, graph: BridgeGraph) -> None:
        with self._lock:
            br = self._bridges.pop(id(graph), None)
        if br is None or self._thread is None:
            return

        def drop() -> None:
            for p in list(br.ports):
                _close_port(p)
                br.drop_port(p)
            for c in br.captures:
                c.close()
            br.captures.clear()

        self.call(drop)

    def add_port(self, graph: BridgeGraph, name: str, mac: str, tag: str) -> Port:
        """A new listening port on `graph`'s bridge.  The socket listens before this
        returns, so QEMU may connect at once (the switch accepts when it gets to it)."""
        br = self.bridge(graph)
        with self._lock:
            self._nports += 1
            path = self.root / f"p{self._nports}-{tag}.sock"  # type: ignore[operator]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            sock.listen(4)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        port = Port(br, name, mac, path)

        def install() -> None:
            br.ports.append(port)
            # Owned by the port: _close_port cancels it if the port goes first.
            fut = port.starting = asyncio.ensure_future(
                self.loop.create_unix_server(lambda: _PortProtocol(port), sock=sock))
            fut.add_done_callback(lambda f: _set_server(port, f, sock))

        self.call(install)
        return port

    def remove_port(self, port: Port) -> None:
        if self._thread is None or self.closed:
            return

        def drop() -> None:
            _close_port(port)
            port.bridge.drop_port(port)

        self.call(drop)
        try:
            port.path.unlink()
        except OSError:
            pass

    def set_up(self, port: Port, up: bool) -> None:
        port.up = up  # read by the switch thread per frame; a bool store is atomic

    def add_capture(self, sink: PcapSink, graph: BridgeGraph, port: Port | None = None) -> None:
        br = self.bridge(graph)

        def add() -> None:
            (port.captures if port is not None else br.captures).append(sink)

        self.call(add)

    def remove_capture(self, sink: PcapSink, graph: BridgeGraph, port: Port | None = None) -> None:
        if self._thread is None or self.closed:
            return
        br = self.bridge(graph)

        def rm() -> None:
            for lst in (br.captures, *(p.captures for p in br.ports)):
                if sink in lst:
                    lst.remove(sink)
            if port is not None and sink in port.captures:
                port.captures.remove(sink)

        self.call(rm)


def _set_server(port: Port, fut: asyncio.Future[Any], sock: socket.socket) -> None:
    if fut.cancelled():
        sock.close()  # the port went before its server was up
        return
    if fut.exception() is not None:
        sock.close()
        log.error("port %s: cannot serve its socket: %s", port.name, fut.exception())
        return
    port.server = fut.result()


def _close_port(port: Port) -> None:
    if port.starting is not None and not port.starting.done():
        port.starting.cancel()
    port.starting = None
    if port.transport is not None:
        port.transport.close()
        port.transport = None
    if port.server is not None:
        port.server.close()
        port.server = None

"""Bridges and NICs as the host model sees them: the graph (`net.graph`) plus the VMs.

A `Bridge` is graph state until a VM attached to it (by handle) boots: then the
VM gets one virtio-net NIC per attached bridge, connected to a port of the
session's switch (`net.switch`).  This module is where VMs meet the network:
`VM` calls `prepare_boot` (NicSpecs for the launch), `after_boot` (addressing)
and `after_shutdown` (ports go away) and nothing else.

Addressing (`provium:bridge("lan", {subnet="10.5.0.0/24"})` or `{addressing=true}`):
each member attached by handle gets `<subnet>.<10 + attach index>/prefix` on the
NIC with its MAC, and every member's /etc/hosts names every member as
`<vm>.<bridge>` (rewritten when members boot).  The local backend has no guest
kernel, so nothing is configured there (the agent would be configuring the host).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..net.errors import BridgeArgumentError, NetError
from ..net.graph import (
    BridgeGraph,
    bandwidth_value,
    check_bridge_name,
    drop_value,
    latency_value,
    mac_address,
    tap_name,
)
from ..net.pcap import PcapSink
from ..net.switch import Port, Switch
from ..vmm.base import NicSpec
from .pynames import python_names
from .errors import ProviumError
from .options import merge_kw
from .registry import ResourceMeta
from .values import type_name

if TYPE_CHECKING:
    from .vm import VM

log = logging.getLogger("provium.net")
BRIDGE_OPTS = ("subnet", "addressing", "seed")
CONFIGURE_TIMEOUT = 30.0
HOSTS_HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost\n# provium: members of this VM's bridges\n"
_auto_subnets = itertools.count(1)


@dataclass
class Attachment:
    """One VM's NIC on one bridge while the VM runs."""

    bridge: Bridge
    nic_id: str
    mac: str
    port: Port | None = None
    address: str | None = None
    hotplugged: bool = False


class VmNets:
    """The bridges one VM is attached to (by handle), in the order the guest sees them."""

    def __init__(self, vm: VM) -> None:
        self.vm_ref = weakref.ref(vm)
        self.bridges: list[Bridge] = []
        self.live: dict[int, Attachment] = {}  # id(bridge) -> attachment while booted

    def ordered(self) -> list[Bridge]:
        return sorted(self.bridges, key=lambda b: b.name)


_nets: weakref.WeakKeyDictionary[Any, VmNets] = weakref.WeakKeyDictionary()
_nets_lock = threading.Lock()


def nets_of(vm: VM) -> VmNets:
    with _nets_lock:
        n = _nets.get(vm)
        if n is None:
            n = _nets[vm] = VmNets(vm)
        return n


def switch_of(session: Any) -> Switch:
    """The session's switch (made on first use; `close_switch` at session end)."""
    sw = getattr(session, "_net_switch", None)
    if sw is None:
        sw = Switch()
        session._net_switch = sw
    return sw


def close_switch(session: Any) -> None:
    sw = getattr(session, "_net_switch", None)
    if sw is not None:
        sw.close()


def _local(vm: VM) -> bool:
    inst = vm.instance
    return inst is not None and getattr(inst, "backend", "") == "local"


# ---- the VM's hooks -----------------------------------------------------------------------

def prepare_boot(vm: VM) -> list[NicSpec]:
    """Ports for every bridge the VM is attached to, and the NICs to give QEMU."""
    nets = nets_of(vm)
    specs = []
    try:
        for br in nets.ordered():
            att = br._open_port(vm)
            nets.live[id(br)] = att
            specs.append(NicSpec(att.nic_id, att.mac, str(att.port.path), br.name))  # type: ignore[union-attr]
    except BaseException:
        after_shutdown(vm)
        raise
    return specs


async def after_boot(vm: VM) -> None:
    """Configure addresses and names in the guest (bridges with addressing)."""
    if _local(vm):
        return
    nets = nets_of(vm)
    for br in nets.ordered():
        att = nets.live.get(id(br))
        if att is not None and not br.is_plugged(vm.name):
            await vm.instance.set_link(att.nic_id, False)  # still unplugged: no carrier either
        if att is not None and att.address is not None:
            await _configure(vm, att, br)
    for br in nets.ordered():
        if br.subnet is not None:
            await br._refresh_hosts()


def after_shutdown(vm: VM) -> None:
    nets = nets_of(vm)
    for key, att in list(nets.live.items()):
        del nets.live[key]
        if att.port is not None:
            att.bridge._close_port(att.port)


def _find_iface(mac: str) -> str:
    """Shell that sets $i to the guest interface with this MAC (waits up to 10 s:
    the agent may answer before /init has loaded virtio_net)."""
    return (
        f"m={mac}; i=; n=0\n"
        "while [ -z \"$i\" ] && [ $n -lt 100 ]; do\n"
        "  for d in /sys/class/net/*; do [ \"$(cat $d/address 2>/dev/null)\" = \"$m\" ] && i=${d##*/}; done\n"
        "  [ -z \"$i\" ] && { n=$((n+1)); sleep 0.1; }\n"
        "done\n"
        "[ -n \"$i\" ] || { echo \"no interface with MAC $m\" >&2; exit 1; }\n")


async def _configure(vm: VM, att: Attachment, br: Bridge) -> None:
    net = br.subnet
    assert net is not None
    script = _find_iface(att.mac) + f"ip link set \"$i\" up && ip addr replace {att.address}/{net.prefixlen} dev \"$i\"\n"
    res = await _guest_sh(vm, script)
    if res.exit_code != 0:
        raise NetError(f"bridge `{br.name}`: configuring {att.address} on vm `{vm.name}` failed (exit "
                       f"{res.exit_code}): {res.stderr.decode('utf-8', 'replace').strip()}")


async def _guest_sh(vm: VM, script: str) -> Any:
    from .execargs import build_command
    from .results import RunResult

    c = build_command("bridge", ["/bin/sh", "-c", script], {"timeout": CONFIGURE_TIMEOUT})
    reply = await vm._acall(c.exec_args())
    if not reply.ok:
        raise NetError(f"vm `{vm.name}`: network set-up could not run: {reply.value}")
    return RunResult.from_exec(reply.value)


# ---- Bridge ---------------------------------------------------------------------------------

def _member_name(v: Any, method: str) -> tuple[str, VM | None]:
    from .vm import VM

    if isinstance(v, VM):
        return v.name, v
    if isinstance(v, str):
        if not v:
            raise BridgeArgumentError(f"{method}: a VM name must not be empty")
        return v, None
    raise BridgeArgumentError(f"bridge expected a VM userdata or string, got {type_name(v)} ({method})")


@python_names
class Bridge:
    """One virtual L2 segment of a lab (see the module docstring)."""

    def __init__(self, session: Any, name: str, opts: Mapping | None = None) -> None:
        check_bridge_name(name)
        o = dict(opts or {})
        for k in o:
            if k not in BRIDGE_OPTS:
                raise BridgeArgumentError(f"lab:bridge: unknown option `{k}` (valid: {', '.join(BRIDGE_OPTS)})")
        seed = o.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BridgeArgumentError(f"lab:bridge: `seed` must be an integer, got {type_name(seed)}")
        self._session = session
        self.name = name
        self.graph = BridgeGraph(name, seed=seed)
        self.subnet = _subnet(o.get("subnet"), o.get("addressing"))
        self._vms: dict[str, VM] = {}
        self._addresses: dict[str, str] = {}
        self._unplugged: set[str] = set()
        self._ports: dict[str, Port] = {}
        self._captures: set[Any] = set()
        self._uplink: Any = None
        self._lock = threading.RLock()
        self.closed = False

    def __str__(self) -> str:
        return f"bridge({self.name}; {len(self.graph.members())} member(s))"

    __repr__ = __str__

    @property
    def switch(self) -> Switch:
        return switch_of(self._session)

    # ---- membership ---------------------------------------------------------------------

    def attach(self, members: Any) -> None:
        """Attach a VM (handle or name) or a list of them; a list is checked whole
        before anything is attached."""
        items = list(members) if isinstance(members, (list, tuple)) else [members]
        resolved = [_member_name(v, "bridge:attach") for v in items]
        for name, vm in resolved:
            if vm is not None and vm.state == "booting":
                raise NetError(f"bridge:attach: vm `{name}` is booting; attach it before vm:boot() or once it is up")
            if vm is not None and self.subnet is not None and not _hostname_ok(name):
                raise BridgeArgumentError(f"bridge:attach: vm name `{name}` cannot be a host name on bridge "
                                          f"`{self.name}` (addressing names members `<vm>.{self.name}`: use "
                                          "letters, digits and `-`)")
        hot = []
        with self._lock:
            for name, vm in resolved:
                self.graph.attach([name])
                if self.subnet is not None and name not in self._addresses:
                    self._addresses[name] = self._next_address()
                if vm is not None:
                    self._vms[name] = vm
                    nets = nets_of(vm)
                    if self not in nets.bridges:
                        nets.bridges.append(self)
                        if vm.state in ("booted", "paused") and not _local(vm):
                            hot.append(vm)
        for vm in hot:
            self._hotplug(vm)

    def _hotplug(self, vm: "VM") -> None:
        """A NIC for a running guest: a new port, then QEMU hot-plugs the device on a
        PCIe root port (q35); with addressing the guest is configured as at boot."""
        nets = nets_of(vm)
        att = self._open_port(vm)
        att.hotplugged = True
        spec = NicSpec(att.nic_id, att.mac, str(att.port.path), self.name)  # type: ignore[union-attr]
        try:
            self._session.run(vm.instance.attach_nic(spec))
        except BaseException as exc:
            if att.port is not None:
                self._close_port(att.port)
            if self in nets.bridges:
                nets.bridges.remove(self)
            if isinstance(exc, Exception):
                raise NetError(f"bridge:attach: hot-plugging a NIC into vm `{vm.name}` failed: {exc}") from exc
            raise
        nets.live[id(self)] = att

        async def configure() -> None:
            if not self.is_plugged(vm.name):
                await vm.instance.set_link(att.nic_id, False)
            if att.address is not None:
                await _configure(vm, att, self)
            for br in nets.ordered():
                if br.subnet is not None:
                    await br._refresh_hosts()

        self._session.run(configure())

    def _next_address(self) -> str:
        assert self.subnet is not None
        used = set(self._addresses.values())
        for host in itertools.islice(self.subnet.hosts(), 9, None):
            if str(host) not in used:
                return str(host)
        raise NetError(f"bridge `{self.name}`: subnet {self.subnet} has no free address left")

    def detach(self, member: Any) -> None:
        name, vm = _member_name(member, "bridge:detach")
        with self._lock:
            self.graph.detach(name)
            self._unplugged.discard(name)
            held = self._vms.pop(name, None)
            vm = vm or held
            if vm is not None:
                nets = nets_of(vm)
                if self in nets.bridges:
                    nets.bridges.remove(self)
                att = nets.live.pop(id(self), None)
                if att is not None and att.port is not None:
                    if vm.state in ("booted", "paused") and not _local(vm):
                        try:
                            self._session.run(vm.instance.set_link(att.nic_id, False))
                        except Exception as exc:  # noqa: BLE001 - its port goes anyway: no frame flows
                            log.debug("bridge %s: set_link down for %s failed: %s", self.name, name, exc)
                    self._close_port(att.port)

    def members(self) -> list[str]:
        return self.graph.members()

    def address_of(self, member: Any) -> str | None:
        """The member's address on this bridge (None without addressing)."""
        name, _ = _member_name(member, "bridge:address")
        return self._addresses.get(name)

    def hostname_of(self, member: Any) -> str:
        name, _ = _member_name(member, "bridge:hostname")
        return f"{name}.{self.name}"

    # ---- partitions, isolation, impairments: the graph does the bookkeeping ---------------

    def partition(self, a: Any, b: Any) -> None:
        self.graph.partition(_member_name(a, "bridge:partition")[0], _member_name(b, "bridge:partition")[0])

    def unpartition(self, a: Any, b: Any) -> None:
        self.graph.unpartition(_member_name(a, "bridge:unpartition")[0], _member_name(b, "bridge:unpartition")[0])

    def partition_directional(self, src: Any, dst: Any) -> None:
        self.graph.partition_directional(_member_name(src, "bridge:partition")[0],
                                         _member_name(dst, "bridge:partition")[0])

    def unpartition_directional(self, src: Any, dst: Any) -> None:
        self.graph.unpartition_directional(_member_name(src, "bridge:unpartition")[0],
                                           _member_name(dst, "bridge:unpartition")[0])

    def partition_all(self) -> None:
        self.graph.partition_all()

    def restore_all(self) -> None:
        self.graph.restore_all()

    def is_partitioned(self, a: Any, b: Any) -> bool:
        return self.graph.is_partitioned(_member_name(a, "bridge:is_partitioned")[0],
                                         _member_name(b, "bridge:is_partitioned")[0])

    def isolate(self, v: Any) -> None:
        self.graph.isolate(_member_name(v, "bridge:isolate")[0])

    def unisolate(self, v: Any) -> None:
        self.graph.unisolate(_member_name(v, "bridge:unisolate")[0])

    def is_isolated(self, v: Any) -> bool:
        return self.graph.is_isolated(_member_name(v, "bridge:is_isolated")[0])

    def reset(self) -> None:
        self.graph.reset()

    def route(self, others: Iterable[str]) -> None:
        self.graph.route(others)

    def routes(self) -> list[str]:
        return self.graph.routes()

    # ---- impairments (validated here, stored by the graph) --------------------------------

    def add_latency(self, ms: Any, jitter_ms: Any = None) -> None:
        """Whole-bridge one-way delay (ms) on every frame, optionally ± jitter (ms)."""
        v = latency_value(ms, "bridge:add_latency")
        j = 0.0 if jitter_ms is None else latency_value(jitter_ms, "bridge:add_latency", "jitter (ms)")
        if j > v:
            raise BridgeArgumentError(f"bridge:add_latency: jitter {j:g} ms is larger than the latency {v:g} ms "
                                      "(a frame cannot arrive before it was sent)")
        self.graph.set_whole(latency_ms=v, jitter_ms=j)

    def add_directional_latency(self, src: Any, dst: Any, ms: Any, jitter_ms: Any = None,
                                method: str = "bridge:add_directional_latency") -> None:
        v = latency_value(ms, method)
        j = 0.0 if jitter_ms is None else latency_value(jitter_ms, method, "jitter (ms)")
        if j > v:
            raise BridgeArgumentError(f"{method}: jitter {j:g} ms is larger than the latency {v:g} ms")
        self.graph.set_directional(_member_name(src, method)[0], _member_name(dst, method)[0], method,
                                   latency_ms=v, jitter_ms=j)

    def drop_rate(self, pct: Any) -> None:
        """Whole-bridge loss in percent (clamped to 100), drawn from the bridge's seed."""
        self.graph.set_whole(drop_pct=drop_value(pct, "bridge:drop_rate"))

    def directional_drop_rate(self, src: Any, dst: Any, pct: Any,
                              method: str = "bridge:directional_drop_rate") -> None:
        self.graph.set_directional(_member_name(src, method)[0], _member_name(dst, method)[0], method,
                                   drop_pct=drop_value(pct, method))

    def bandwidth_limit(self, bps: Any) -> None:
        """Whole-bridge cap in bits per second for each direction of each pair (0 = none)."""
        self.graph.set_whole(bandwidth_bps=bandwidth_value(bps, "bridge:bandwidth_limit"))

    def directional_bandwidth(self, src: Any, dst: Any, bps: Any,
                              method: str = "bridge:bandwidth_limit") -> None:
        self.graph.set_directional(_member_name(src, method)[0], _member_name(dst, method)[0], method,
                                   bandwidth_bps=bandwidth_value(bps, method))

    def latency_ms(self) -> int:
        return int(self.graph.whole.latency_ms)

    def jitter_ms(self) -> int:
        return int(self.graph.whole.jitter_ms)

    def drop_rate_pct(self) -> float:
        v = self.graph.whole.drop_pct
        return int(v) if v == int(v) else v

    def bandwidth_bps(self) -> int:
        return self.graph.whole.bandwidth_bps

    def reseed(self, seed: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BridgeArgumentError(f"bridge:seed: expected an integer, got {type_name(seed)}")
        self.graph.reseed(seed)

    # ---- uplink ---------------------------------------------------------------------------

    def enable_uplink(self, opts: Mapping | None = None, **kw: Any) -> None:
        """Let the members reach services on the host's loopback: `ports = {8080, ...}`
        (same port on both sides) or `ports = {[80] = 8080}` (guest port -> host
        port), at `host.<bridge>` (`<subnet>.2`).  Needs an addressed bridge."""
        from ..net.uplink import Uplink

        o = dict(merge_kw(opts, kw, "Bridge.enable_uplink") or {})  # Python keywords: enable_uplink(ports=[80])
        for k in o:
            if k != "ports":
                raise BridgeArgumentError(f"bridge:enable_uplink: unknown option `{k}` (valid: ports)")
        forwards = _forwards(o.get("ports"))
        if self.subnet is None:
            raise NetError(f"bridge:enable_uplink: bridge `{self.name}` has no subnet: create it with "
                           "{addressing=true} or {subnet=\"10.5.0.0/24\"} so the members have addresses the "
                           "uplink can answer")
        if self.closed:
            raise NetError(f"bridge:enable_uplink: bridge `{self.name}` is closed")
        self.disable_uplink()
        up = Uplink(self.switch, self.graph, self.subnet, forwards)
        up.start()
        self._uplink = up
        self.switch.on_close(up.stop)
        self.graph.uplink = True
        self._run_refresh()

    def disable_uplink(self) -> None:
        up, self._uplink = self._uplink, None
        if up is not None:
            up.stop()
        self.graph.uplink = False

    def uplink_address(self) -> str | None:
        """`<subnet>.2` while the uplink is on (also named `host.<bridge>`), else None."""
        return self._uplink.address if self._uplink is not None else None

    def uplink_forwards(self) -> dict[int, int]:
        return dict(self._uplink.forwards) if self._uplink is not None else {}

    def _run_refresh(self) -> None:
        if any(vm.state == "booted" and not _local(vm) for vm in self._vms.values()):
            self._session.run(self._refresh_hosts())

    # ---- ports ----------------------------------------------------------------------------

    def _open_port(self, vm: VM) -> Attachment:
        if self.closed:
            raise NetError(f"bridge `{self.name}` is closed (it ended with its scope); vm `{vm.name}` cannot boot "
                           "on it")
        tag = tap_name(vm.name, self.name)
        mac = self._mac(vm.name)
        port = self.switch.add_port(self.graph, vm.name, mac, tag)
        port.up = vm.name not in self._unplugged
        with self._lock:
            self._ports[vm.name] = port
        return Attachment(self, f"n{tag[4:]}", mac, port, self._addresses.get(vm.name))

    def _close_port(self, port: Port) -> None:
        with self._lock:
            if self._ports.get(port.name) is port:
                del self._ports[port.name]
        self.switch.remove_port(port)

    def port_of(self, name: str) -> Port | None:
        return self._ports.get(name)

    def set_plugged(self, name: str, vm: VM | None, up: bool) -> None:
        """nic:disconnect / reconnect: the switch stops (or resumes) forwarding the
        member's frames and, for a running guest, QMP sets its carrier."""
        with self._lock:
            (self._unplugged.discard if up else self._unplugged.add)(name)
            port = self._ports.get(name)
        if port is not None:
            self.switch.set_up(port, up)
        vm = vm or self._vms.get(name)
        if vm is None or port is None or _local(vm) or vm.state not in ("booted", "paused"):
            return
        att = nets_of(vm).live.get(id(self))
        if att is None:
            return
        try:
            self._session.run(vm.instance.set_link(att.nic_id, up))
        except ProviumError:
            raise
        except Exception as exc:
            raise NetError(f"nic {'reconnect' if up else 'disconnect'}: vm `{name}`: set_link: {exc}") from exc

    def is_plugged(self, name: str) -> bool:
        return name not in self._unplugged

    # ---- addressing ----------------------------------------------------------------------

    def hosts_lines(self) -> list[str]:
        lines = [f"{addr}\t{name}.{self.name}" for name, addr in sorted(self._addresses.items())
                 if name in self.graph.members()]
        if self._uplink is not None and self._uplink.address:
            lines.append(f"{self._uplink.address}\thost.{self.name}")
        return lines

    async def _refresh_hosts(self) -> None:
        """Rewrite /etc/hosts on every running member, and pin every member's MAC in
        its neighbour table: no ARP needed, so a directional partition really lets
        one direction through (an ARP reply would otherwise be blocked with it)."""
        from ..protocol.messages import WriteFileArgs
        from ..protocol.types import WriteFileMode

        for name in self.graph.members():
            vm = self._vms.get(name)
            if vm is None or vm.state != "booted" or _local(vm):
                continue
            lines: list[str] = []
            for br in nets_of(vm).ordered():
                if br.subnet is not None:
                    lines += br.hosts_lines()
            text = HOSTS_HEADER + "".join(line + "\n" for line in lines)
            reply = await vm._acall(WriteFileArgs("/etc/hosts", text.encode(), WriteFileMode("replace"), 0o644))
            if not reply.ok:
                raise NetError(f"bridge `{self.name}`: writing /etc/hosts on vm `{name}` failed: {reply.value}")
            att = nets_of(vm).live.get(id(self))
            if att is None:
                continue
            neigh = "".join(
                f"arp -i \"$i\" -s {addr} {self._mac(other)}\n"
                for other, addr in sorted(self._addresses.items()) if other != name and self.graph.is_member(other))
            if neigh:
                res = await _guest_sh(vm, _find_iface(att.mac) + neigh)
                if res.exit_code != 0:
                    raise NetError(f"bridge `{self.name}`: setting neighbours on vm `{name}` failed: "
                                   f"{res.stderr.decode('utf-8', 'replace').strip()}")

    def _mac(self, name: str) -> str:
        return mac_address(name, self.name)

    # ---- capture ----------------------------------------------------------------------------

    def capture(self, opts: Mapping | None = None, *, nic: str | None = None, **kw: Any) -> Any:
        """A Capture stream of every frame entering the bridge (or, with `nic`, every
        frame from or to that member), also written to a pcap file (`file=` to choose it)."""
        from .capture import Capture, capture_path

        method = "nic:capture" if nic is not None else "bridge:capture"
        o = dict(merge_kw(opts, kw, method) or {})  # Python keywords: capture(file="x.pcap")
        for k in o:
            if k != "file":
                raise BridgeArgumentError(f"{method}: unknown option `{k}` (valid: file)")
        if o.get("file") is not None and not isinstance(o["file"], str):
            raise BridgeArgumentError(f"{method}: `file` must be a path string, got {type_name(o['file'])}")
        if self.closed:
            raise NetError(f"{method}: bridge `{self.name}` is closed")
        port = None
        if nic is not None:
            port = self._ports.get(nic)
            if port is None:
                raise NetError(f"nic:capture: vm `{nic}` has no NIC on bridge `{self.name}` (not booted?). "
                               "Call lab:boot() / vm:boot() first.")
        sw = self.switch
        sw.bridge(self.graph)  # starts the switch (and its scratch directory)
        label = f"{self.name}" if nic is None else f"{self.name}-{nic}"
        path = capture_path(sw.root, o.get("file"), label)
        try:
            sink = PcapSink(path)
        except OSError as exc:
            raise NetError(f"{method}: cannot write the pcap file `{path}`: {exc.strerror or exc}") from None
        sw.add_capture(sink, self.graph, port)
        site, test = self._session.creation_site()
        meta = ResourceMeta("nic_capture" if nic else "bridge_capture", f'"{label}"', site, test)
        vms = [self._vms[nic]] if nic is not None and nic in self._vms else list(self._vms.values())
        graph = self.graph

        def detach() -> None:
            sw.remove_capture(sink, graph, port)
            self._captures.discard(ref)

        cap = Capture(sink, label, meta, vms, detach)
        ref = weakref.ref(cap)
        self._captures.add(ref)
        return cap

    def active_captures(self) -> int:
        return sum(1 for r in self._captures if r() is not None and not r().closed)

    # ---- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Scope end: captures stop, ports close, the uplink goes.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        for ref in list(self._captures):
            try:
                cap = ref()
                if cap is not None:
                    cap.end()  # the stream reads what it has, then EOF
            except Exception as exc:  # noqa: BLE001 - teardown reaches everything
                log.debug("bridge %s: closing a capture failed: %s", self.name, exc)
        if self._uplink is not None:
            self._uplink.stop()
            self._uplink = None
        for vm in list(self._vms.values()):
            nets = nets_of(vm)
            if self in nets.bridges:
                nets.bridges.remove(self)
            att = nets.live.pop(id(self), None)
            if att is not None and att.port is not None:
                self._close_port(att.port)
        if getattr(self._session, "_net_switch", None) is not None:
            self.switch.forget_bridge(self.graph)


def _subnet(subnet: Any, addressing: Any) -> ipaddress.IPv4Network | None:
    if addressing is not None and not isinstance(addressing, bool):
        raise BridgeArgumentError(f"lab:bridge: `addressing` must be a boolean, got {type_name(addressing)}")
    if subnet is None:
        if addressing:
            return ipaddress.IPv4Network(f"10.77.{next(_auto_subnets) % 250}.0/24")
        return None
    if addressing is False:
        raise BridgeArgumentError("lab:bridge: `subnet` given with `addressing=false` (drop one of them)")
    if not isinstance(subnet, str):
        raise BridgeArgumentError(f"lab:bridge: `subnet` must be a string like \"10.5.0.0/24\", got "
                                  f"{type_name(subnet)}")
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise BridgeArgumentError(f"lab:bridge: `subnet` {subnet!r} is not an IPv4 network ({exc}); "
                                  "e.g. \"10.5.0.0/24\"") from None
    if not net.is_private or net.prefixlen > 28 or net.prefixlen < 8:
        raise BridgeArgumentError(f"lab:bridge: `subnet` {subnet} must be a private IPv4 network between /8 and "
                                  "/28 (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
    return net


def _forwards(ports: Any) -> dict[int, int]:
    def port(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise BridgeArgumentError(f"bridge:enable_uplink: {what} must be a TCP port 1..65535, got {v!r}")
        return v

    if ports is None:
        raise BridgeArgumentError("bridge:enable_uplink: needs `ports`, the host loopback ports to reach, "
                                  "e.g. {ports = {8080}} or {ports = {[80] = 8080}}")
    if isinstance(ports, Mapping):
        return {port(g, "guest port"): port(h, "host port") for g, h in ports.items()}
    if isinstance(ports, (list, tuple)):
        return {port(p, "port"): port(p, "port") for p in ports}
    raise BridgeArgumentError(f"bridge:enable_uplink: `ports` must be a list or a table, got {type_name(ports)}")


def _hostname_ok(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", name))


@python_names
class Nic:
    """One VM's NIC on one bridge: counters, capture, cable pull."""

    def __init__(self, bridge: Bridge, vm_name: str, vm: VM | None = None) -> None:
        self.bridge = bridge
        self.vm_name = vm_name
        self.vm = vm

    def __str__(self) -> str:
        return f"nic({self.vm_name} on {self.bridge.name})"

    __repr__ = __str__

    def counters(self) -> dict[str, int]:
        """The guest's view: rx = what it received, tx = what it sent.  Zeros until
        the NIC exists (the VM booted on this bridge)."""
        port = self.bridge.port_of(self.vm_name)
        if port is None:
            return {"rx_bytes": 0, "rx_packets": 0, "tx_bytes": 0, "tx_packets": 0, "errors": 0, "dropped": 0}
        return port.counters()

    def capture(self, opts: Mapping | None = None, **kw: Any) -> Any:
        return self.bridge.capture(opts, nic=self.vm_name, **kw)

    def disconnect(self) -> None:
        self.bridge.set_plugged(self.vm_name, self.vm, False)

    def reconnect(self) -> None:
        self.bridge.set_plugged(self.vm_name, self.vm, True)

    def is_connected(self) -> bool:
        return self.bridge.is_plugged(self.vm_name)


def nic_of(vm: VM, name: str) -> Nic:
    """`vm:nic("lan")` (a bridge name) or `vm:nic("eth0")` (the N-th attached bridge by name)."""
    import re

    bridges = nets_of(vm).ordered()
    for br in bridges:
        if br.name == name:
            return Nic(br, vm.name, vm)
    m = re.fullmatch(r"(?:eth|ens|enp0s)(\d+)", name)
    if m and int(m.group(1)) < len(bridges):
        return Nic(bridges[int(m.group(1))], vm.name, vm)
    raise NetError(f"vm:nic: no NIC `{name}` on vm `{vm.name}` (try a bridge name like `lan` or a guest iface "
                   f"like `eth0`; attached bridges: {', '.join(b.name for b in bridges) or 'none'})")




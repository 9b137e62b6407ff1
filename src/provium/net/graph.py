"""The graph of one bridge: who is attached, who may talk to whom, and how badly.

Pure bookkeeping (no I/O, no VMs: members are names), so it behaves the same on
`--vmm local` as with real guests.  The switch never reads this object while it
changes: every mutation compiles a new immutable `Policy` and publishes it with
one attribute assignment, which the switch thread picks up on its next frame.

Semantics follow the reference (see docs/networks.md):
* symmetric partitions are canonical pairs and may name VMs that are not (yet)
  attached; directional ones (`{from=, to=}`) need both ends attached;
* `partition_all` is a flag that `restore_all` clears (pair partitions survive);
* isolation is a separate dimension (`is_partitioned` does not report it);
* whole-bridge impairments *replace* their previous value; directional ones are
  kept per (from, to) and stack on top of the whole-bridge ones;
* `reset` clears partitions and impairments but keeps isolation, routes and uplink.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..typenames import type_name as _tname
from .errors import BridgeArgumentError, NetError

UPLINK = "<uplink>"  # the port name of a bridge's uplink (never a VM name: `<` is not allowed there)

# Limits that tell a typo from a setting (a latency of an hour is no network a test wants).
MAX_LATENCY_MS = 60_000
MIN_BANDWIDTH_BPS = 1_000
MAX_BANDWIDTH_BPS = 100_000_000_000

# A bridge name is also a DNS label (`a.lan`) and, for the reference, a Linux interface
# name: letters, digits, `_` and `-`, at most 15 characters, starting with a letter or digit.
BRIDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")
RESERVED_NAMES = ("vm_fixture", "lab_fixture", "pack", "unpack")


def check_bridge_name(name: Any, method: str = "lab:bridge") -> str:
    if not isinstance(name, str):
        raise BridgeArgumentError(f"{method}: name must be a string, got {type(name).__name__}")
    if name in RESERVED_NAMES:
        raise NetError(f"name `{name}` is reserved for the dot-access surface (vm_fixture, lab_fixture, pack, "
                       "unpack); use lab:vm()/lab:bridge() with a different name")
    if not BRIDGE_NAME.fullmatch(name):
        raise BridgeArgumentError(
            f"{method}: bridge name `{name}` is not valid: use 1 to 15 letters, digits, `_` or `-`, "
            "starting with a letter or digit (it is also the DNS suffix of the members' names)")
    return name


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def tap_name(vm: str, bridge: str) -> str:
    """The reference's per-(VM, bridge) interface name, `tap-<vm4><hash7>` (≤ 15 chars).

    We create no TAP, but the name is the stable identity of a NIC (QEMU ids, socket
    files, pcap names) and the reference's tests pin it."""
    prefix = "".join(c for c in vm if c.isascii() and (c.isalnum() or c == "_"))[:4]
    h = fnv1a64(f"{vm}:{bridge}".encode()) & 0x0FFFFFFF
    return f"tap-{prefix}{h:07x}"


def mac_address(vm: str, bridge: str, lab: str = "") -> str:
    """A stable, locally administered unicast MAC for (lab, VM, bridge): `52:54:00` +
    three bytes of FNV-1a of the names (QEMU's own prefix, so tools know it)."""
    h = fnv1a64(f"{lab}/{vm}-{bridge}".encode())
    return f"52:54:00:{(h >> 16) & 0xFF:02x}:{(h >> 8) & 0xFF:02x}:{h & 0xFF:02x}"


@dataclass(frozen=True)
class Impairment:
    """What happens to frames on one path (all zero = nothing)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_pct: float = 0.0
    bandwidth_bps: int = 0

    def __bool__(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or self.drop_pct or self.bandwidth_bps)

    def stacked(self, other: Impairment | None) -> Impairment:
        """Both applied one after the other: delays add, drops compound, the
        narrower bandwidth wins."""
        if not other:
            return self
        bws = [b for b in (self.bandwidth_bps, other.bandwidth_bps) if b]
        keep = (1 - self.drop_pct / 100) * (1 - other.drop_pct / 100)
        return Impairment(self.latency_ms + other.latency_ms, self.jitter_ms + other.jitter_ms,
                          round((1 - keep) * 100, 9), min(bws) if bws else 0)


@dataclass(frozen=True)
class Policy:
    """An immutable snapshot of the forwarding rules, read by the switch per frame."""

    version: int
    partitions: frozenset = frozenset()  # ordered (a, b) pairs: a's frames do not reach b
    isolated: frozenset = frozenset()
    all_partitioned: bool = False
    whole: Impairment = Impairment()
    directional: dict = field(default_factory=dict)  # (from, to) -> Impairment
    seed: int = 0

    @property
    def filtering(self) -> bool:
        return bool(self.partitions or self.isolated or self.all_partitioned)

    @property
    def impairing(self) -> bool:
        return bool(self.whole) or bool(self.directional)

    def blocks(self, a: str, b: str) -> bool:
        if a == b:
            return False
        if a in self.isolated or b in self.isolated:
            return True
        if a == UPLINK or b == UPLINK:
            return False
        return self.all_partitioned or (a, b) in self.partitions

    def impairment(self, a: str, b: str) -> Impairment | None:
        d = self.directional.get((a, b))
        if d is None:
            return self.whole if self.whole else None
        return d.stacked(self.whole) if self.whole else d


def _number(v: Any, method: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BridgeArgumentError(f"{method}: expected int or table, got {_tname(v)} ({what} must be a number)")
    if not math.isfinite(v):
        raise BridgeArgumentError(f"{method}: {what} must be a finite number, got {v}")
    if v < 0:
        raise BridgeArgumentError(f"{method}: expected a non-negative int or table, got {v:g} ({what} must not "
                                  "be negative)")
    return float(v)


def latency_value(v: Any, method: str, what: str = "latency (ms)") -> float:
    ms = _number(v, method, what)
    if ms > MAX_LATENCY_MS:
        raise BridgeArgumentError(f"{method}: {what} {ms:g} is absurd (at most {MAX_LATENCY_MS} ms)")
    return ms


def drop_value(v: Any, method: str) -> float:
    # Like the reference, a percentage over 100 is clamped (100 = drop everything).
    return min(100.0, _number(v, method, "drop rate (percent)"))


def bandwidth_value(v: Any, method: str) -> int:
    bps = _number(v, method, "bandwidth (bits/s)")
    if bps and not MIN_BANDWIDTH_BPS <= bps <= MAX_BANDWIDTH_BPS:
        raise BridgeArgumentError(f"{method}: bandwidth {bps:g} bit/s is out of range "
                                  f"({MIN_BANDWIDTH_BPS}..{MAX_BANDWIDTH_BPS}, or 0 for unlimited)")
    return int(bps)


class BridgeGraph:
    """The state of one bridge.  Thread-safe; every change publishes `policy`."""

    def __init__(self, name: str, *, seed: int = 0) -> None:
        self.name = check_bridge_name(name)
        self.seed = seed
        self._lock = threading.RLock()
        self._members: dict[str, None] = {}  # insertion order = attach order
        self._partitions: set[tuple[str, str]] = set()  # canonical (sorted) pairs
        self._directional: set[tuple[str, str]] = set()
        self._all_partitioned = False
        self._isolated: set[str] = set()
        self.whole = Impairment()
        self._dir_imp: dict[tuple[str, str], Impairment] = {}
        self._routes: set[str] = set()
        self.uplink = False
        self._version = 0
        self.policy = Policy(0, seed=seed)

    # ---- publishing ---------------------------------------------------------------------

    def _publish(self) -> None:
        self._version += 1
        parts = set(self._directional)
        for a, b in self._partitions:
            parts.add((a, b))
            parts.add((b, a))
        self.policy = Policy(self._version, frozenset(parts), frozenset(self._isolated), self._all_partitioned,
                             self.whole, {k: v for k, v in self._dir_imp.items() if v}, self.seed)

    # ---- membership ---------------------------------------------------------------------

    def members(self) -> list[str]:
        with self._lock:
            return sorted(self._members)

    def attach_order(self) -> list[str]:
        with self._lock:
            return list(self._members)

    def is_member(self, name: str) -> bool:
        return name in self._members

    def attach(self, names: Iterable[str]) -> list[str]:
        """Add members (a set: repeats are no-ops); returns the newly added ones."""
        added = []
        with self._lock:
            for n in names:
                if n not in self._members:
                    self._members[n] = None
                    added.append(n)
            self._publish()
        return added

    def detach(self, name: str) -> bool:
        """Remove a member and everything that names it (partitions, isolation,
        directional impairments).  False if it was not attached."""
        with self._lock:
            was = self._members.pop(name, "absent") is None
            self._isolated.discard(name)
            self._partitions = {p for p in self._partitions if name not in p}
            self._directional = {p for p in self._directional if name not in p}
            self._dir_imp = {p: v for p, v in self._dir_imp.items() if name not in p}
            self._publish()
        return was

    def require_attached(self, method: str, *names: str) -> None:
        for n in names:
            if n not in self._members:
                have = ", ".join(f"{m}" for m in sorted(self._members))
                raise NetError(f"{method}: vm `{n}` is not attached to bridge `{self.name}` (attached: [{have}]). "
                               f'Call bridge:attach("{n}") first.')

    # ---- partitions ---------------------------------------------------------------------

    @staticmethod
    def _not_self(method: str, a: str, b: str) -> None:
        if a == b:
            raise BridgeArgumentError(f"{method}: cannot partition vm `{a}` from itself (give two different VMs)")

    def partition(self, a: str, b: str) -> None:
        self._not_self("bridge:partition", a, b)
        with self._lock:
            self._partitions.add((min(a, b), max(a, b)))
            self._publish()

    def unpartition(self, a: str, b: str) -> None:
        with self._lock:
            self._partitions.discard((min(a, b), max(a, b)))
            self._publish()

    def partition_directional(self, src: str, dst: str) -> None:
        self._not_self("bridge:partition", src, dst)
        with self._lock:
            self.require_attached("bridge:partition", src, dst)
            self._directional.add((src, dst))
            self._publish()

    def unpartition_directional(self, src: str, dst: str) -> None:
        with self._lock:
            self._directional.discard((src, dst))
            self._publish()

    def partition_all(self) -> None:
        with self._lock:
            self._all_partitioned = True
            self._publish()

    def restore_all(self) -> None:
        with self._lock:
            self._all_partitioned = False
            self._publish()

    def is_partitioned(self, a: str, b: str) -> bool:
        with self._lock:
            return self._all_partitioned or (min(a, b), max(a, b)) in self._partitions

    def is_partitioned_directional(self, src: str, dst: str) -> bool:
        with self._lock:
            return self.policy.blocks(src, dst) and src not in self._isolated and dst not in self._isolated

    @property
    def fully_partitioned(self) -> bool:
        return self._all_partitioned

    def partitions(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._partitions)

    def directional_partitions(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._directional)

    # ---- isolation ----------------------------------------------------------------------

    def isolate(self, name: str) -> None:
        with self._lock:
            self._isolated.add(name)
            self._publish()

    def unisolate(self, name: str) -> None:
        with self._lock:
            self._isolated.discard(name)
            self._publish()

    def is_isolated(self, name: str) -> bool:
        return name in self._isolated

    def isolated(self) -> list[str]:
        with self._lock:
            return sorted(self._isolated)

    # ---- impairments --------------------------------------------------------------------

    def set_whole(self, **changes: Any) -> None:
        with self._lock:
            self.whole = replace(self.whole, **changes)
            self._publish()

    def set_directional(self, src: str, dst: str, method: str, **changes: Any) -> None:
        if src == dst:
            raise BridgeArgumentError(f"{method}: `from` and `to` are both `{src}` (a VM's traffic to itself "
                                      "never crosses the bridge)")
        with self._lock:
            self.require_attached(method, src, dst)
            cur = self._dir_imp.get((src, dst), Impairment())
            new = replace(cur, **changes)
            if new:
                self._dir_imp[(src, dst)] = new
            else:
                self._dir_imp.pop((src, dst), None)  # all zero: nothing to keep
            self._publish()

    def directional_impairments(self) -> dict[tuple[str, str], Impairment]:
        with self._lock:
            return dict(self._dir_imp)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self.seed = seed
            self._publish()

    def reset(self) -> None:
        """Partitions and impairments go; isolation, routes and uplink stay."""
        with self._lock:
            self._partitions.clear()
            self._directional.clear()
            self._all_partitioned = False
            self.whole = Impairment()
            self._dir_imp.clear()
            self._publish()

    # ---- topology -----------------------------------------------------------------------

    def route(self, names: Iterable[str]) -> None:
        with self._lock:
            self._routes.update(names)

    def routes(self) -> list[str]:
        with self._lock:
            return sorted(self._routes)

    # ---- snapshots ----------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The bridge as `lab.json` stores it (the reference's field names, plus ours)."""
        with self._lock:
            return {
                "name": self.name,
                "members": self.attach_order(),
                "latency_ms": self.whole.latency_ms,
                "jitter_ms": self.whole.jitter_ms,
                "drop_rate_pct": self.whole.drop_pct,
                "bandwidth_bps": self.whole.bandwidth_bps,
                "uplink_enabled": self.uplink,
                "routes": self.routes(),
                "isolated": self.isolated(),
                "partitions": [] if self._all_partitioned else [list(p) for p in self.partitions()],
                "directional_partitions": [list(p) for p in self.directional_partitions()],
                "directional_impairments": [
                    {"from": a, "to": b, "latency_ms": v.latency_ms, "jitter_ms": v.jitter_ms,
                     "drop_rate_pct": v.drop_pct, "bandwidth_bps": v.bandwidth_bps}
                    for (a, b), v in sorted(self._dir_imp.items())],
                "fully_partitioned": self._all_partitioned,
                "seed": self.seed,
            }

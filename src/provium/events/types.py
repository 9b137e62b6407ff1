"""The 17 event variants of the observability stream, and their frame.

A frame body is a msgpack map `{"ts": ns, "kind": "<variant>", "payload": {...}}`
carried with the same length-prefixed framing as the agent wire.  Field names
are the public contract (consumers in any language read them), so they follow
the spec exactly.  Test `meta` values are kept exactly as they came: a msgpack
`bin` stays `bytes` and a `str` stays `str`, so `provium-coverage` and other
readers see what the test author wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar, Iterator, Union

from provium.errors import ProtocolError

from provium.protocol import framing
from provium.protocol.codec import WireError, decode, encode

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


class EventDecodeError(ProtocolError, ValueError):
    """A frame is not a valid event (unknown kind, missing field, wrong type)."""


def now_ns() -> int:
    return time.time_ns()


@dataclass
class ResourceAmount:
    memory_bytes: int = 0
    cpus: int = 0


def check_meta_value(v: Any, where: str) -> None:
    """A MetaValue is nil/bool/int(i64)/float/str/bytes/array/map(str -> value)."""
    if v is None or isinstance(v, (bool, float, str, bytes)):
        return
    if isinstance(v, int):
        if not I64_MIN <= v <= I64_MAX:
            raise EventDecodeError(f"{where}: integer {v} does not fit a signed 64-bit meta value")
        return
    if isinstance(v, (list, tuple)):
        for i, item in enumerate(v):
            check_meta_value(item, f"{where}[{i}]")
        return
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, str):
                raise EventDecodeError(f"{where}: map key {k!r} is not a string")
            check_meta_value(item, f"{where}.{k}")
        return
    raise EventDecodeError(f"{where}: {type(v).__name__} is not a meta value")


def _meta() -> Any:
    return field(default_factory=dict)


# ---- file lifecycle ---------------------------------------------------------


@dataclass
class FileDiscovered:
    KIND: ClassVar[str] = "file_discovered"
    path: str
    fixture_refs: list[str] = field(default_factory=list)
    declared_claim: ResourceAmount | None = None


@dataclass
class FileDispatched:
    KIND: ClassVar[str] = "file_dispatched"
    path: str
    reservation: ResourceAmount = field(default_factory=ResourceAmount)
    # Our addition: the Ray node that ran the file (`--executor ray`).  Left off the
    # wire when empty, so a local run's frames stay byte for byte the reference's.
    node: str = field(default="", metadata={"omit_empty": True})


@dataclass
class FileBlocked:
    KIND: ClassVar[str] = "file_blocked"
    path: str
    waiting_for: ResourceAmount = field(default_factory=ResourceAmount)
    reason: str = ""  # "psi_pressure" | "pool_full"; old frames may lack it


FILE_STATUSES = ("passed", "failed", "timed_out", "crashed")


@dataclass
class FileCompleted:
    KIND: ClassVar[str] = "file_completed"
    path: str
    status: str  # one of FILE_STATUSES
    duration_ns: int = 0
    node: str = field(default="", metadata={"omit_empty": True})  # as FileDispatched.node


# ---- test lifecycle ---------------------------------------------------------


@dataclass
class TestStarted:
    KIND: ClassVar[str] = "test_started"
    __test__ = False  # not a pytest class
    path: str
    name: str
    meta: dict[str, Any] = _meta()


@dataclass
class TestSkipped:
    KIND: ClassVar[str] = "test_skipped"
    __test__ = False
    path: str
    name: str
    reason: str = ""
    meta: dict[str, Any] = _meta()


@dataclass
class TestPassed:
    KIND: ClassVar[str] = "test_passed"
    __test__ = False
    path: str
    name: str
    duration_ns: int = 0
    meta: dict[str, Any] = _meta()


@dataclass
class TestFailed:
    KIND: ClassVar[str] = "test_failed"
    __test__ = False
    path: str
    name: str
    duration_ns: int = 0
    reason: str = ""
    console_excerpt: str = ""
    meta: dict[str, Any] = _meta()


# ---- VM lifecycle -----------------------------------------------------------


@dataclass
class VmSpawned:
    KIND: ClassVar[str] = "vm_spawned"
    file: str
    vm_name: str
    profile: str
    memory_bytes: int = 0
    cid: int = 0


@dataclass
class VmShutdown:
    KIND: ClassVar[str] = "vm_shutdown"
    file: str
    vm_name: str
    duration_ns: int = 0


# ---- pool and claims --------------------------------------------------------


@dataclass
class PoolState:
    KIND: ClassVar[str] = "pool_state"
    used: ResourceAmount = field(default_factory=ResourceAmount)
    available: ResourceAmount = field(default_factory=ResourceAmount)


@dataclass
class ClaimAcquired:
    KIND: ClassVar[str] = "claim_acquired"
    path: str = ""
    amount: ResourceAmount = field(default_factory=ResourceAmount)


@dataclass
class ClaimReleased:
    KIND: ClassVar[str] = "claim_released"
    path: str = ""
    amount: ResourceAmount = field(default_factory=ResourceAmount)


# ---- fixtures ---------------------------------------------------------------


@dataclass
class FixtureBuildStarted:
    KIND: ClassVar[str] = "fixture_build_started"
    path: str


@dataclass
class FixtureBuildDone:
    KIND: ClassVar[str] = "fixture_build_done"
    path: str
    duration_ns: int = 0
    snapshot_bytes: int = 0


@dataclass
class FixtureBuildWaiting:
    KIND: ClassVar[str] = "fixture_build_waiting"
    path: str
    held_by_file: str = ""


@dataclass
class FixtureCacheHit:
    KIND: ClassVar[str] = "fixture_cache_hit"
    path: str


Event = Union[
    FileDiscovered, FileDispatched, FileBlocked, FileCompleted,
    TestStarted, TestSkipped, TestPassed, TestFailed,
    VmSpawned, VmShutdown,
    PoolState, ClaimAcquired, ClaimReleased,
    FixtureBuildStarted, FixtureBuildDone, FixtureBuildWaiting, FixtureCacheHit,
]

EVENT_TYPES: dict[str, type] = {
    cls.KIND: cls
    for cls in (
        FileDiscovered, FileDispatched, FileBlocked, FileCompleted,
        TestStarted, TestSkipped, TestPassed, TestFailed,
        VmSpawned, VmShutdown,
        PoolState, ClaimAcquired, ClaimReleased,
        FixtureBuildStarted, FixtureBuildDone, FixtureBuildWaiting, FixtureCacheHit,
    )
}
KINDS = tuple(EVENT_TYPES)


@dataclass
class EventFrame:
    """One event with its host timestamp (ns since the Unix epoch)."""

    ts: int
    kind: str
    payload: Any  # one of the Event dataclasses

    def __post_init__(self) -> None:
        expected = getattr(self.payload, "KIND", None)
        if expected != self.kind:
            raise ValueError(f"EventFrame: kind {self.kind!r} does not match payload {type(self.payload).__name__}")

    @classmethod
    def of(cls, event: Any, ts: int | None = None) -> "EventFrame":
        return cls(ts=now_ns() if ts is None else ts, kind=event.KIND, payload=event)

    def to_wire(self) -> dict:
        return {"ts": self.ts, "kind": self.kind, "payload": encode(self.payload)}

    def encode(self) -> bytes:
        """The whole frame (length header + msgpack body), ready for one write()."""
        return framing.encode_frame(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> "EventFrame":
        if not isinstance(obj, dict):
            raise EventDecodeError(f"event frame: expected a map, got {type(obj).__name__}")
        kind = obj.get("kind")
        if not isinstance(kind, str):
            raise EventDecodeError("event frame: missing string field `kind`")
        tp = EVENT_TYPES.get(kind)
        if tp is None:
            raise EventDecodeError(f"event frame: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        ts = obj.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise EventDecodeError(f"event frame `{kind}`: `ts` must be an integer, got {type(ts).__name__}")
        payload = obj.get("payload")
        try:
            event = decode(tp, payload, kind)
        except WireError as exc:
            raise EventDecodeError(f"event frame: {exc}") from exc
        meta = getattr(event, "meta", None)
        if meta is not None:
            check_meta_value(meta, f"{kind}.meta")
        return cls(ts=ts, kind=kind, payload=event)

    @classmethod
    def decode(cls, body: bytes | bytearray) -> "EventFrame":
        """Decode one frame body (without the length header)."""
        return cls.from_wire(framing.unpack(body))


def read_event(stream: BinaryIO) -> EventFrame:
    """Read the next event; raises framing.CleanEof at a clean end of stream."""
    return EventFrame.from_wire(framing.read_frame(stream))


def iter_events(stream: BinaryIO) -> Iterator[EventFrame]:
    """Every event until a clean EOF; a torn or invalid frame raises."""
    while True:
        try:
            yield read_event(stream)
        except framing.CleanEof:
            return

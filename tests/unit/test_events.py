"""Event types and sinks: wire shape, round trips, sinks that files/sockets/fds share."""

from __future__ import annotations

import io
import os
import socket
import time

import msgpack
import pytest

from provium.events import types as ev
from provium.events.sinks import CallbackSink, FdSink, FileSink, MultiSink, NullSink, UnixSocketSink
from provium.protocol import framing

RA = ev.ResourceAmount(memory_bytes=50 << 20, cpus=2)
META = {"spec": "cli.exit", "slow": True, "n": -3, "f": 1.5, "raw": b"\x00\xff", "s": "text",
        "list": [1, "a", None], "map": {"k": b"v"}, "nil": None}

SAMPLES = [
    ev.FileDiscovered(path="a.test.lua", fixture_refs=["base", "base"], declared_claim=None),
    ev.FileDiscovered(path="b.test.lua", fixture_refs=[], declared_claim=RA),
    ev.FileDispatched(path="a.test.lua", reservation=RA),
    ev.FileBlocked(path="a.test.lua", waiting_for=RA, reason="pool_full"),
    ev.FileCompleted(path="a.test.lua", status="crashed", duration_ns=12),
    ev.TestStarted(path="a.test.lua", name="t1", meta=META),
    ev.TestSkipped(path="a.test.lua", name="t2", reason="slow", meta={}),
    ev.TestPassed(path="a.test.lua", name="t1", duration_ns=99, meta=META),
    ev.TestFailed(path="a.test.lua", name="t3", duration_ns=5, reason="boom", console_excerpt="---- vm x", meta=META),
    ev.VmSpawned(file="provium", vm_name="vm1", profile="linux", memory_bytes=512 << 20, cid=3),
    ev.VmShutdown(file="a.test.lua", vm_name="vm1", duration_ns=0),
    ev.PoolState(used=RA, available=ev.ResourceAmount(1 << 30, 8)),
    ev.ClaimAcquired(path="provium", amount=RA),
    ev.ClaimReleased(path="a.test.lua", amount=RA),
    ev.FixtureBuildStarted(path="fx/base"),
    ev.FixtureBuildDone(path="fx/base", duration_ns=7, snapshot_bytes=1 << 40),
    ev.FixtureBuildWaiting(path="fx/base", held_by_file="other.test.lua"),
    ev.FixtureCacheHit(path="fx/base"),
]


def test_all_17_kinds_are_covered():
    assert len(ev.KINDS) == 17
    assert {type(s).KIND for s in SAMPLES} == set(ev.KINDS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).KIND)
def test_round_trip_every_variant(event):
    frame = ev.EventFrame.of(event, ts=1_700_000_000_123_456_789)
    raw = frame.encode()
    # 4-byte big-endian length, then a msgpack map with ts/kind/payload
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4
    body = msgpack.unpackb(raw[4:], raw=False)
    assert set(body) == {"ts", "kind", "payload"}
    assert body["kind"] == event.KIND and body["ts"] == 1_700_000_000_123_456_789
    back = ev.read_event(io.BytesIO(raw))
    assert back == frame
    assert back.payload == event


def test_wire_field_names():
    body = ev.EventFrame.of(ev.PoolState(used=RA, available=RA), ts=1).to_wire()
    assert body["payload"] == {"used": {"memory_bytes": 50 << 20, "cpus": 2},
                               "available": {"memory_bytes": 50 << 20, "cpus": 2}}
    body = ev.EventFrame.of(SAMPLES[8], ts=1).to_wire()
    assert set(body["payload"]) == {"path", "name", "duration_ns", "reason", "console_excerpt", "meta"}
    body = ev.EventFrame.of(SAMPLES[0], ts=1).to_wire()
    assert body["payload"]["declared_claim"] is None


def test_node_field_only_on_the_wire_when_set():
    # Local runs: the reference's exact payload.  Ray runs: the node that ran the file.
    for local in (SAMPLES[2], SAMPLES[4]):
        assert "node" not in ev.EventFrame.of(local, ts=1).to_wire()["payload"]
    remote = ev.FileCompleted(path="a.test.lua", status="passed", duration_ns=3, node="abc@127.0.0.1")
    frame = ev.EventFrame.of(remote, ts=1)
    assert frame.to_wire()["payload"]["node"] == "abc@127.0.0.1"
    assert ev.read_event(io.BytesIO(frame.encode())).payload == remote


def test_meta_bytes_stay_bytes_and_str_stays_str():
    frame = ev.EventFrame.of(ev.TestPassed(path="p", name="n", meta={"a": b"abc", "b": "abc"}))
    back = ev.read_event(io.BytesIO(frame.encode()))
    assert back.payload.meta["a"] == b"abc" and isinstance(back.payload.meta["a"], bytes)
    assert back.payload.meta["b"] == "abc" and isinstance(back.payload.meta["b"], str)


def test_unknown_kind_is_rejected():
    raw = framing.encode_frame({"ts": 1, "kind": "file_exploded", "payload": {"path": "x"}})
    with pytest.raises(ev.EventDecodeError, match="unknown kind 'file_exploded'"):
        ev.read_event(io.BytesIO(raw))


def test_missing_field_and_bad_types_are_rejected():
    raw = framing.encode_frame({"ts": 1, "kind": "file_completed", "payload": {"status": "passed"}})
    with pytest.raises(ev.EventDecodeError, match="path"):
        ev.read_event(io.BytesIO(raw))
    raw = framing.encode_frame({"ts": "soon", "kind": "fixture_cache_hit", "payload": {"path": "x"}})
    with pytest.raises(ev.EventDecodeError, match="ts"):
        ev.read_event(io.BytesIO(raw))
    raw = framing.encode_frame({"ts": 1, "kind": "test_started",
                                "payload": {"path": "p", "name": "n", "meta": {"big": (1 << 64) - 1}}})
    with pytest.raises(ev.EventDecodeError, match="64-bit"):
        ev.read_event(io.BytesIO(raw))


def test_old_frames_default_optional_fields():
    raw = framing.encode_frame({"ts": 1, "kind": "file_blocked",
                                "payload": {"path": "p", "waiting_for": {"memory_bytes": 1, "cpus": 0}}})
    assert ev.read_event(io.BytesIO(raw)).payload.reason == ""
    raw = framing.encode_frame({"ts": 1, "kind": "claim_released", "payload": {"amount": {"memory_bytes": 1, "cpus": 1}}})
    assert ev.read_event(io.BytesIO(raw)).payload.path == ""


def test_torn_stream_raises_but_clean_end_stops():
    raw = ev.EventFrame.of(SAMPLES[0]).encode()
    assert len(list(ev.iter_events(io.BytesIO(raw * 3)))) == 3
    with pytest.raises(framing.UnexpectedEof):
        list(ev.iter_events(io.BytesIO(raw + raw[:7])))


def test_file_sink_appends_and_decodes_frame_by_frame(tmp_path):
    p = tmp_path / "events.msgpack"
    with FileSink(p) as s:
        s.emit(SAMPLES[0])
        s.emit(SAMPLES[4])
    with FileSink(p) as s:  # reopened: appends, does not truncate
        s.emit(SAMPLES[9])
    with open(p, "rb") as f:
        kinds = [fr.kind for fr in ev.iter_events(f)]
    assert kinds == ["file_discovered", "file_completed", "vm_spawned"]
    with FileSink(p, truncate=True) as s:
        s.emit(SAMPLES[17])
    with open(p, "rb") as f:
        assert [fr.kind for fr in ev.iter_events(f)] == ["fixture_cache_hit"]


def test_file_sink_shared_by_processes_keeps_frames_whole(tmp_path):
    p = tmp_path / "shared.msgpack"
    big = ev.TestFailed(path="p", name="n", reason="x" * 200_000)
    pids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                with FileSink(p) as s:
                    for _ in range(20):
                        s.emit(big)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    with open(p, "rb") as f:
        frames = list(ev.iter_events(f))
    assert len(frames) == 60 and all(fr.payload.reason == "x" * 200_000 for fr in frames)


def test_fd_sink_over_a_pipe():
    r, w = os.pipe()
    s = FdSink(w, close_fd=True)
    s.emit(SAMPLES[5])
    s.emit(SAMPLES[7])
    s.close()
    with os.fdopen(r, "rb") as f:
        frames = list(ev.iter_events(f))
    assert [fr.payload for fr in frames] == [SAMPLES[5], SAMPLES[7]]


def test_emit_errors_are_reported_not_raised(capsys):
    r, w = os.pipe()
    os.close(r)
    s = FdSink(w, close_fd=True)
    s.emit(SAMPLES[0])  # EPIPE (SIGPIPE is ignored by Python)
    s.emit(SAMPLES[0])
    s.close()
    err = capsys.readouterr().err
    assert err.count("event emit failed") == 1


def test_multi_sink_fans_out(tmp_path):
    seen = []
    p = tmp_path / "m.msgpack"
    m = MultiSink([NullSink(), FileSink(p), CallbackSink(seen.append)])
    for e in SAMPLES[:3]:
        m.emit(e)
    m.close()
    with open(p, "rb") as f:
        assert [fr.payload for fr in ev.iter_events(f)] == SAMPLES[:3]
    assert [fr.payload for fr in seen] == SAMPLES[:3]


def _read_client(sock: socket.socket, n: int) -> list:
    f = sock.makefile("rb")
    return [ev.read_event(f) for _ in range(n)]


def test_unix_socket_sink_two_clients_and_dropped_client(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "events.sock"
    sink = UnixSocketSink(path)
    try:
        clients = []
        for _ in range(3):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(path))
            clients.append(c)
        deadline = time.monotonic() + 5
        while sink.client_count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.client_count == 3
        clients[2].close()  # a client that went away is dropped, others unaffected
        for e in SAMPLES[:4]:
            sink.emit(e)
        results = [_read_client(c, 4) for c in clients[:2]]
        for got in results:
            assert [fr.payload for fr in got] == SAMPLES[:4]
        assert sink.client_count == 2
    finally:
        sink.close()
        for c in clients:
            c.close()
    assert not path.exists()


def test_unix_socket_sink_replaces_only_a_stale_socket(tmp_path):
    path = tmp_path / "events.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, left by a killed run
    sink = UnixSocketSink(path)
    assert path.is_socket()
    sink.close()
    assert not path.exists()


def test_unix_socket_sink_never_removes_other_files(tmp_path):
    from provium.hostfiles import HostFileError

    victim = tmp_path / "ok.test.lua"
    victim.write_text("test('x', function() end)")
    link = tmp_path / "link.sock"
    link.symlink_to(victim)
    for path, kind in ((victim, "is a file"), (link, "is a symlink")):
        with pytest.raises(HostFileError, match=kind):
            UnixSocketSink(path)
    assert victim.read_text() == "test('x', function() end)" and link.is_symlink()
    live = UnixSocketSink(tmp_path / "live.sock")
    try:
        with pytest.raises(HostFileError, match="listening"):
            UnixSocketSink(tmp_path / "live.sock")
    finally:
        live.close()


def test_unix_socket_sink_refuses_missing_dir_and_long_path(tmp_path):
    from provium.hostfiles import HostFileError

    with pytest.raises(HostFileError, match="does not exist"):
        UnixSocketSink(tmp_path / "nonexistent" / "dir" / "e.sock")
    assert not (tmp_path / "nonexistent").exists()
    long = tmp_path / ("x" * 150 + ".sock")
    with pytest.raises(OSError, match="unix socket path .* is too long"):
        UnixSocketSink(long)


def test_waiting_for_uses_memory_bytes_key():
    frame = ev.EventFrame.of(ev.FileBlocked(path="p", waiting_for=ev.ResourceAmount(memory_bytes=52428800, cpus=0),
                                            reason="pool_full"), ts=5)
    body = msgpack.unpackb(frame.encode()[4:], raw=False)
    assert body["payload"]["waiting_for"] == {"memory_bytes": 52428800, "cpus": 0}
    assert body["payload"]["reason"] == "pool_full"

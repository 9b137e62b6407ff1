"""agent/bulkwrite.py: a large write_file goes to its file while its frame arrives."""

from __future__ import annotations

import os
import socket
import time

import pytest
from agent_client_util import inproc_agent

from provium.agent import bulkwrite
from provium.protocol.envelope import Envelope
from provium.protocol.framing import encode_frame, encode_frame_parts
from provium.protocol.messages import GetTimeArgs, WriteFileArgs
from provium.protocol.mux import _blob_large
from provium.protocol.types import WriteFileMode

SIZE = bulkwrite.STREAM_MIN + 12345  # over the threshold, and an odd tail


def _frame(ch: int, path: str, data: bytes, mode: WriteFileMode = WriteFileMode.REPLACE) -> bytes:
    """The frame as the host sends it (its data last)."""
    env = Envelope(ch, "write_file", WriteFileArgs(path, data, mode))
    return b"".join(bytes(p) for p in encode_frame_parts(_blob_large(env.to_wire(), 2)))


def _calls(monkeypatch) -> list:
    seen: list = []
    real = bulkwrite._pump

    def pump(*a):
        seen.append(a[1])
        return real(*a)

    monkeypatch.setattr(bulkwrite, "_pump", pump)
    return seen


def test_a_large_write_file_is_streamed_to_its_file_and_the_next_frame_follows(tmp_path, monkeypatch):
    streamed = _calls(monkeypatch)
    data = os.urandom(SIZE)
    path = str(tmp_path / "big.bin")
    c = inproc_agent()
    try:
        c.send_raw(_frame(5, path, data) + encode_frame(Envelope(6, "get_time", GetTimeArgs()).to_wire()))
        assert c.recv(5).data.ok
        assert c.recv(6).kind == "get_time_result"  # the pump stopped at the frame's end
        assert streamed and streamed[0] > 0  # it did take the streaming path
        with open(path, "rb") as f:
            assert f.read() == data
        c.send_raw(_frame(7, path, data[:SIZE - 1], WriteFileMode.APPEND))
        assert c.recv(7).data.ok
        with open(path, "rb") as f:
            assert f.read() == data + data[:SIZE - 1]
        c.send_raw(_frame(8, path, data, WriteFileMode.EXCLUSIVE))
        res = c.recv(8).data
        assert not res.ok and res.value.errno == 17  # exists: the usual path reports it
    finally:
        c.close()


def test_what_cannot_be_streamed_takes_the_usual_path(tmp_path, monkeypatch):
    streamed = _calls(monkeypatch)
    data = os.urandom(SIZE)
    c = inproc_agent()
    try:
        c.send_raw(_frame(5, str(tmp_path), data))  # a directory: the open fails
        res = c.recv(5).data
        assert not res.ok and res.value.errno == 21
        path = str(tmp_path / "f")
        # data not last in its map (as the wire allows): gathered, then written as before
        c.send_raw(encode_frame(Envelope(6, "write_file", WriteFileArgs(path, data)).to_wire()))
        assert c.recv(6).data.ok
        with open(path, "rb") as f:
            assert f.read() == data
        assert streamed == []
    finally:
        c.close()


def test_a_write_error_is_reported_after_the_whole_frame_was_read(tmp_path, monkeypatch):
    def failing(fd, data, error):
        return error or OSError(28, "No space left on device")

    monkeypatch.setattr(bulkwrite, "_write_all", failing)
    c = inproc_agent()
    try:
        c.send_raw(_frame(5, str(tmp_path / "full"), os.urandom(SIZE))
                   + encode_frame(Envelope(6, "get_time", GetTimeArgs()).to_wire()))
        res = c.recv(5).data
        assert not res.ok and res.value.errno == 28 and "write_file" in res.value.message
        assert c.recv(6).kind == "get_time_result"  # the rest of the data was drained, not taken as frames
    finally:
        c.close()


def test_a_stream_that_ends_inside_the_frame_ends_the_session(tmp_path):
    c = inproc_agent()
    frame = _frame(5, str(tmp_path / "cut"), os.urandom(SIZE))
    c.send_raw(frame[:len(frame) // 2])
    c.sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 10
    while "reason" not in c.result and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    assert c.result.get("reason") == "truncated"  # type: ignore[attr-defined]
    c.close()


class _Port:
    """A port-like reader: readv() fills at most `cap` bytes of its segments per
    call, as a virtio port hands over what its buffers hold."""

    def __init__(self, data: bytes, caps: list[int]) -> None:
        self.data, self.pos, self.caps, self.calls = data, 0, caps, []

    def readv(self, bufs) -> int:
        room = sum(len(b) for b in bufs)
        self.calls.append(room)
        n = min(room, self.caps[len(self.calls) % len(self.caps)], len(self.data) - self.pos)
        k = 0
        for b in bufs:
            m = min(len(b), n - k)
            b[:m] = self.data[self.pos + k:self.pos + k + m]
            k += m
            if k == n:
                break
        self.pos += n
        return n


def test_the_vectored_pump_takes_short_reads_and_short_writes_and_stops_at_the_frame_end(tmp_path, monkeypatch):
    data = os.urandom(3 * bulkwrite._BUFFER + 5000)
    port = _Port(data + b"NEXT FRAME", [bulkwrite._BUFFER, 4096, 777, 100000])
    real_write = os.write
    monkeypatch.setattr(bulkwrite.os, "write", lambda fd, b: real_write(fd, bytes(b[:3000])))  # short writes
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert bulkwrite._pump(fd, len(data), None, port.readv, None) is None
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data
    assert port.pos == len(data)  # never read past the frame's end
    assert max(port.calls) == bulkwrite._BUFFER and port.calls[-1] < bulkwrite._BUFFER


def test_the_vectored_pump_drains_the_frame_after_a_failing_write(tmp_path, monkeypatch):
    data = os.urandom(2 * bulkwrite._BUFFER + 99)
    port = _Port(data, [65536])
    writes = []

    def write(fd, b):
        writes.append(len(b))
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return len(b)

    monkeypatch.setattr(bulkwrite.os, "write", write)
    err = bulkwrite._pump(-1, len(data), None, port.readv, None)
    assert isinstance(err, OSError) and err.errno == 28
    assert port.pos == len(data) and len(writes) == 2  # all read, nothing written after the failure


def test_the_vectored_pump_ends_truncated_when_the_stream_ends_inside_the_frame():
    port = _Port(b"x" * 5000, [4096])
    with pytest.raises(bulkwrite.Truncated):
        bulkwrite._pump(-1, 10000, None, port.readv, OSError(28, "full"))
    assert port.pos == 5000

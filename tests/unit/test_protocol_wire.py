"""wire.FrameProtocol: the host's frame reader that reads into the decoder's buffer.

Driven the way an asyncio transport drives a BufferedProtocol: get_buffer(),
fill part of it, buffer_updated(n); then through a real socket pair.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from provium.protocol import encode_frame
from provium.protocol.framing import HEADER, FrameTooLarge, UnexpectedEof, unpack
from provium.protocol.wire import READ_CHUNK, FrameProtocol


class Sink:
    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.ends: list[BaseException | None] = []

    def on_frame(self, body: Any) -> None:
        self.frames.append(unpack(body))

    def on_end(self, exc: BaseException | None) -> None:
        self.ends.append(exc)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def protocol(limit: int | None = None) -> tuple[FrameProtocol, Sink, Transport]:
    proto = FrameProtocol() if limit is None else FrameProtocol(limit)
    sink = Sink()
    tr = Transport()
    proto.connection_made(tr)
    proto.attach(sink.on_frame, sink.on_end)
    return proto, sink, tr


def deliver(proto: FrameProtocol, data: bytes, step: int | None = None) -> None:
    """Hand `data` over as a transport would: into get_buffer()'s view, at most
    `step` bytes (or what the view holds) per buffer_updated()."""
    pos = 0
    while pos < len(data):
        buf = proto.get_buffer(-1)
        n = min(len(buf), len(data) - pos, step or len(data))
        buf[:n] = data[pos:pos + n]
        proto.buffer_updated(n)
        pos += n


def test_frames_split_at_every_byte_boundary():
    msgs = [{"a": 1}, {"b": b"x" * 300}, {"c": "end"}]
    wire = b"".join(encode_frame(m) for m in msgs)
    for cut in range(1, len(wire)):
        proto, sink, _ = protocol()
        deliver(proto, wire[:cut])
        deliver(proto, wire[cut:])
        assert sink.frames == msgs, cut
        assert sink.ends == []


def test_one_byte_at_a_time():
    msgs = [{"i": i, "d": b"y" * i} for i in range(20)]
    proto, sink, _ = protocol()
    deliver(proto, b"".join(encode_frame(m) for m in msgs), step=1)
    assert sink.frames == msgs


def test_several_frames_in_one_read():
    msgs = [{"n": i} for i in range(50)]
    proto, sink, _ = protocol()
    buf = proto.get_buffer(-1)
    wire = b"".join(encode_frame(m) for m in msgs)
    assert len(wire) <= len(buf)
    buf[:len(wire)] = wire
    proto.buffer_updated(len(wire))
    assert sink.frames == msgs


def test_a_frame_larger_than_the_read_buffer_is_read_in_place():
    data = bytes(range(256)) * (3 * READ_CHUNK // 256)  # 3x the scratch area
    wire = encode_frame({"data": data}) + encode_frame({"after": True})
    proto, sink, _ = protocol()
    deliver(proto, wire[:100])  # the header and the start of the body
    # Now the buffer handed out is the rest of the body itself: no copy.
    buf = proto.get_buffer(-1)
    assert len(buf) == len(encode_frame({"data": data})) - 100
    deliver(proto, wire[100:], step=70_000)
    assert sink.frames == [{"data": data}, {"after": True}]


def test_truncated_stream_is_an_unexpected_eof():
    wire = encode_frame({"data": b"z" * 1000})
    proto, sink, tr = protocol()
    deliver(proto, wire[:500])
    proto.eof_received()
    assert len(sink.ends) == 1 and isinstance(sink.ends[0], UnexpectedEof)
    assert "500 of" in str(sink.ends[0]) and tr.closed
    proto.connection_lost(None)
    assert len(sink.ends) == 1  # reported once


def test_clean_end_at_a_frame_boundary():
    proto, sink, _ = protocol()
    deliver(proto, encode_frame({"k": 1}))
    proto.eof_received()
    assert sink.frames == [{"k": 1}] and sink.ends == [None]


def test_connection_lost_mid_frame_is_an_error():
    proto, sink, _ = protocol()
    deliver(proto, encode_frame({"k": 1})[:3])
    proto.connection_lost(None)
    assert isinstance(sink.ends[0], UnexpectedEof)


def test_oversized_length_is_refused_before_its_body():
    proto, sink, tr = protocol(limit=1 << 20)
    proto.buffer_updated(0)
    deliver(proto, encode_frame({"ok": 1}) + HEADER.pack((1 << 20) + 1) + b"abc")
    assert sink.frames == [{"ok": 1}]
    assert len(sink.ends) == 1 and isinstance(sink.ends[0], FrameTooLarge)
    assert "exceeds the 1048576-byte cap" in str(sink.ends[0]) and tr.closed
    # Nothing more is read once the connection failed.
    deliver(proto, encode_frame({"late": 1}))
    assert sink.frames == [{"ok": 1}]


def test_a_sink_error_ends_the_connection():
    proto = FrameProtocol()
    tr = Transport()
    proto.connection_made(tr)
    ends: list[BaseException | None] = []

    def bad(body: Any) -> None:
        raise ValueError("nope")

    proto.attach(bad, ends.append)
    deliver(proto, encode_frame({"k": 1}))
    assert isinstance(ends[0], ValueError) and tr.closed


def test_frames_before_attach_are_handed_over():
    proto = FrameProtocol()
    proto.connection_made(Transport())
    deliver(proto, encode_frame({"early": 1}))
    proto.eof_received()
    sink = Sink()
    proto.attach(sink.on_frame, sink.on_end)
    assert sink.frames == [{"early": 1}] and sink.ends == [None]


def test_over_a_socket_with_write_flow_control():
    payload = b"q" * (3 << 20)

    async def go() -> None:
        a, b = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_unix_connection(FrameProtocol, sock=a)
        sink = Sink()
        proto.attach(sink.on_frame, sink.on_end)
        _, peer = await loop.create_unix_connection(FrameProtocol, sock=b)
        peer_sink = Sink()
        peer.attach(peer_sink.on_frame, peer_sink.on_end)
        # More than the transport's high-water mark: drain() has to wait for the peer.
        proto.write(encode_frame({"big": payload}))
        await proto.drain()
        peer.write(encode_frame({"back": 1}))
        for _ in range(500):
            if peer_sink.frames and sink.frames:
                break
            await asyncio.sleep(0.01)
        assert peer_sink.frames == [{"big": payload}] and sink.frames == [{"back": 1}]
        peer.close()
        for _ in range(200):
            if sink.ends:
                break
            await asyncio.sleep(0.01)
        assert sink.ends == [None]
        with pytest.raises(ConnectionResetError):
            await proto.drain()
        proto.close()

    asyncio.run(asyncio.wait_for(go(), 20))

"""The one frame decoder: any split of the input gives the same frames; the cap,
the oversized-frame skip and the end-of-stream reports."""

import asyncio
import io
import random
import struct

import pytest

from provium.protocol import FrameDecoder
from provium.protocol.framing import (
    MAX_FRAME,
    CleanEof,
    FrameTooLarge,
    UnexpectedEof,
    async_read_frame_body,
    encode_frame,
    read_frame_body,
)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


BODIES = [b"", b"a", b"xyz" * 100, bytes(range(256)) * 300, b"q" * (1 << 16), b"r" * ((1 << 16) + 3), b"end"]
STREAM = b"".join(frame(b) for b in BODIES)


def take_all(dec: FrameDecoder) -> list[bytes]:
    return [bytes(b) for b in dec]


@pytest.mark.parametrize("seed", range(20))
def test_any_split_of_the_stream_gives_the_same_frames(seed):
    rnd = random.Random(seed)
    dec = FrameDecoder()
    out = []
    pos = 0
    while pos < len(STREAM):
        n = rnd.choice([1, 2, 3, 4, 5, 7, 100, 4096, 70000])
        dec.feed(STREAM[pos:pos + n])
        pos += n
        out += take_all(dec)
    assert out == BODIES
    assert dec.at_boundary and dec.buffered() == 0
    with pytest.raises(CleanEof):
        dec.eof()


@pytest.mark.parametrize("seed", range(10))
def test_reading_into_its_buffer_gives_the_same_frames(seed):
    rnd = random.Random(seed)
    src = io.BytesIO(STREAM)
    dec = FrameDecoder()
    out = []
    while True:
        buf = dec.get_buffer(rnd.choice([1, 3, 64, 1 << 16]))
        n = src.readinto(buf[:rnd.choice([1, 5, 4096, 1 << 20])])
        if not n:
            break
        dec.buffer_updated(n)
        out += take_all(dec)
    assert out == BODIES


def test_a_large_body_is_read_in_place():
    body = bytes(range(256)) * 1024
    dec = FrameDecoder()
    dec.feed(frame(body)[:10])
    assert dec.next() is None
    view = dec.get_buffer()
    assert len(view) == len(body) - 6  # the rest of that body, nothing more
    view[:] = body[6:]
    dec.buffer_updated(len(view))
    assert dec.next() == body
    assert dec.at_boundary


def test_want_asks_exactly_for_the_rest_of_the_header_or_body():
    dec = FrameDecoder()
    assert dec.want() == 4
    dec.feed(b"\x00\x00")
    assert dec.want() == 2
    dec.feed(b"\x00\x05")
    assert dec.next() is None and dec.want() == 5
    dec.feed(b"ab")
    assert dec.want() == 3
    dec.feed(b"cde")
    assert dec.next() == b"abcde" and dec.want() == 4


def test_an_oversized_frame_is_reported_once_then_skipped():
    dec = FrameDecoder(limit=10)
    dec.feed(frame(b"x" * 11)[:8] )
    with pytest.raises(FrameTooLarge) as ei:
        dec.next()
    assert ei.value.length == 11 and ei.value.limit == 10
    assert dec.want() == 7  # the rest of the oversized body is dropped as it comes
    dec.feed(b"x" * 7 + frame(b"ok"))
    assert take_all(dec) == [b"ok"]


def test_mid_frame_end_says_how_far_it_got():
    dec = FrameDecoder()
    dec.feed(b"\x00\x00")
    with pytest.raises(UnexpectedEof) as ei:
        dec.eof()
    assert (ei.value.bytes_read, ei.value.expected) == (2, 4)
    dec = FrameDecoder()
    dec.feed(frame(b"abcdef")[:7])
    assert dec.next() is None
    with pytest.raises(UnexpectedEof) as ei:
        dec.eof()
    assert (ei.value.bytes_read, ei.value.expected) == (7, 10)
    dec = FrameDecoder()
    dec.feed(frame(b"z" * 100000)[:50000])
    assert dec.next() is None
    with pytest.raises(UnexpectedEof) as ei:
        dec.eof()
    assert (ei.value.bytes_read, ei.value.expected) == (50000, 100004)


def test_blocking_reader_never_reads_past_its_frame():
    src = io.BytesIO(encode_frame({"a": 1}) + b"TAIL")
    read_frame_body(src)
    assert src.read() == b"TAIL"
    with pytest.raises(FrameTooLarge):
        read_frame_body(io.BytesIO(struct.pack(">I", MAX_FRAME + 1)))


def test_async_reader_uses_the_same_rules():
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(frame(b"one") + frame(b"two")[:5])
        r.feed_eof()
        assert await async_read_frame_body(r) == b"one"
        with pytest.raises(UnexpectedEof):
            await async_read_frame_body(r)
        r2 = asyncio.StreamReader()
        r2.feed_eof()
        with pytest.raises(CleanEof):
            await async_read_frame_body(r2)

    asyncio.run(go())


@pytest.mark.parametrize("sizes", [[], [1 << 16], [70000, 5], [1 << 16, (1 << 16) + 1], [300], [1 << 20]])
def test_frame_parts_equal_the_copying_encoder(sizes):
    """A Blob goes out as a part of its own; the bytes on the wire are exactly
    those of the same value packed with plain bytes."""
    from provium.protocol.framing import Blob, encode_frame_parts

    datas = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    plain = {"ch": 3, "kind": "x", "data": {"outcome": "ok", "value": {f"f{i}": d for i, d in enumerate(datas)}}}
    blobbed = {"ch": 3, "kind": "x",
               "data": {"outcome": "ok", "value": {f"f{i}": Blob(d) for i, d in enumerate(datas)}}}
    parts = encode_frame_parts(blobbed)
    assert b"".join(parts) == encode_frame(plain) == encode_frame(blobbed)
    big = [p for p in parts if len(p) >= 1 << 16]
    assert all(any(p is d for d in datas) for p in big)  # not copied
    dec = FrameDecoder()
    for p in parts:
        dec.feed(p)
    from provium.protocol.framing import unpack

    assert unpack(dec.next()) == plain


def test_frame_parts_respect_the_cap():
    from provium.protocol.framing import Blob, encode_frame_parts

    with pytest.raises(FrameTooLarge):
        encode_frame_parts({"d": Blob(b"x" * 1000)}, limit=999)


def test_a_blob_of_several_buffers_goes_out_as_one_bin_without_joining():
    """A command's output is kept as the chunks its pipe gave; a Blob of them
    packs as one bin value, each chunk a part of its own (not copied)."""
    from provium.protocol.framing import Blob, encode_frame_parts, unpack

    chunks = [b"a" * 70000, memoryview(b"b" * 100000)[5:], b"c" * 3]
    joined = b"".join(bytes(c) for c in chunks)
    blob = Blob(chunks)
    assert len(blob) == len(joined) and bytes(blob) == joined
    parts = encode_frame_parts({"ch": 1, "kind": "x", "data": blob})
    assert b"".join(bytes(p) for p in parts) == encode_frame({"ch": 1, "kind": "x", "data": joined})
    assert any(p is chunks[0] for p in parts) and any(p is chunks[1] for p in parts)
    dec = FrameDecoder()
    for p in parts:
        dec.feed(p)
    assert unpack(dec.next())["data"] == joined
    assert encode_frame({"d": blob}) == encode_frame({"d": joined})  # the copying encoder too

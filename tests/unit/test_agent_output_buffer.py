"""children.OutputBuffer: a process's output kept as the chunks its pipe gave,
read back as views (no copies on the way to a stream frame or a reply)."""

from __future__ import annotations

from provium.agent.children import OutputBuffer
from provium.protocol.framing import BLOB_MIN, Blob, output_marker


def _join(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


def test_reads_span_chunks_as_views_and_never_copy():
    buf = OutputBuffer()
    a, b, c = b"a" * 10, b"b" * 20, b"c" * 30
    for chunk in (a, b, c):
        buf.append(chunk)
    assert buf.size == 60
    parts = buf.read(0, 100)
    assert parts[0] is a and parts[1] is b and parts[2] is c  # whole chunks as they are
    assert _join(buf.read(5, 10)) == b"a" * 5 + b"b" * 5
    assert [len(p) for p in buf.read(5, 10)] == [5, 5]
    assert _join(buf.read(15, 100)) == b"b" * 15 + c
    assert buf.read(60, 10) == [] and buf.read(0, 0) == []
    view = buf.read(12, 3)[0]
    assert isinstance(view, memoryview) and view.obj is b  # a view of the kept chunk
    buf.append(b"d" * 5)  # appending later leaves earlier views valid
    assert bytes(view) == b"bbb" and _join(buf.read(58, 10)) == b"cc" + b"d" * 5


def test_the_cap_keeps_a_prefix_and_the_marker_ends_it():
    buf = OutputBuffer("stdout", cap=25)
    buf.append(b"x" * 10)
    buf.append(b"y" * 10)
    buf.append(b"z" * 10)  # 5 kept, 5 dropped
    buf.append(b"w" * 7)  # all dropped
    buf.finish()
    marker = output_marker("stdout", 12)
    assert buf.snapshot() == b"x" * 10 + b"y" * 10 + b"z" * 5 + marker
    assert _join(buf.read(0, 1000)) == buf.snapshot()
    assert buf.done and buf.dropped == 12


def test_value_is_bytes_when_small_and_a_blob_of_the_chunks_when_large():
    small = OutputBuffer()
    small.append(b"hello ")
    small.append(b"world")
    assert small.value() == b"hello world"
    big = OutputBuffer()
    chunks = [bytes([i]) * (BLOB_MIN // 2 + 1) for i in range(3)]
    for chunk in chunks:
        big.append(chunk)
    v = big.value()
    assert isinstance(v, Blob) and all(p is c for p, c in zip(v.parts(), chunks))
    assert bytes(v) == b"".join(chunks) == big.snapshot()
    assert OutputBuffer().value() == b""

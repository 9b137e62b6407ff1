"""protocol.views.unpack_views: large bin values come back as views of the body."""

from __future__ import annotations

import msgpack
import pytest

from provium.protocol.framing import DecodeError, pack, unpack
from provium.protocol.views import unpack_views

BIG = 1 << 16


def _body(value) -> bytearray:
    return bytearray(pack(value))  # what the FrameDecoder hands over for a large frame


def test_a_write_file_request_keeps_its_data_in_the_frame():
    data = bytes(range(256)) * (5 << 12)  # 5 MiB
    req = {"ch": 7, "kind": "write_file", "data": {"path": "/tmp/x", "data": data, "mode": "replace"}}
    body = _body(req)
    got = unpack_views(body)
    view = got["data"]["data"]
    assert isinstance(view, memoryview) and view.readonly and view.obj is body  # no copy
    assert got == req  # a view compares equal to the bytes it shows
    assert bytes(view) == data


def test_every_msgpack_shape_round_trips_like_unpack():
    value = {
        "ints": [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63, -1, -32, -33, -128, -129, -32768,
                 -32769, -2**31, -2**63],
        "floats": [0.5, -1e300], "flags": [True, False, None],
        "strs": ["", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "e" * 65536],
        "bins": [b"", b"x" * 255, b"y" * 256, b"z" * (BIG - 1), b"w" * BIG, b"v" * (BIG + 1)],
        "nested": {"m" * 20: [{i: [i] * 3} for i in range(20)], "arr": list(range(20))},
        "ext": [msgpack.ExtType(5, b"abcd"), msgpack.ExtType(1, b"x" * 300)],
        "big": b"q" * (1 << 20),
    }
    body = _body(value)
    got = unpack_views(body)
    assert got == unpack(body)
    assert isinstance(got["big"], memoryview) and isinstance(got["bins"][4], memoryview)
    assert isinstance(got["bins"][3], bytes)  # under the threshold: a copy as usual


def test_small_bodies_and_bodies_without_large_bins_are_unpacked_as_usual():
    small = {"data": b"x" * BIG}
    assert isinstance(unpack_views(_body(small)), dict)
    assert isinstance(unpack_views(_body(small))["data"], bytes)  # under 1 MiB: copied
    strs = {"s": "t" * (2 << 20)}
    assert unpack_views(_body(strs)) == strs


def test_bad_input_is_reported_like_unpack():
    body = _body({"data": b"x" * (2 << 20)})
    with pytest.raises(DecodeError):
        unpack_views(body[:-1])  # truncated
    with pytest.raises(DecodeError):
        unpack_views(body + b"\x00")  # trailing bytes
    with pytest.raises(DecodeError):
        unpack_views(bytearray(b"\xc1") + body)  # a never-used byte
    many = _body([1] * 5000 + [b"x" * (1 << 20)])  # more items than the walk looks at
    assert unpack_views(many) == unpack(many) and isinstance(unpack_views(many)[-1], bytes)


def test_an_ext_on_the_wire_cannot_pose_as_a_placeholder():
    from provium.protocol import views

    fake = msgpack.ExtType(views._EXT, b"\x00" * 8 + (0).to_bytes(8, "big"))
    value = [fake, b"x" * (2 << 20)]
    got = unpack_views(_body(value))
    assert got[0] == fake and isinstance(got[1], memoryview)

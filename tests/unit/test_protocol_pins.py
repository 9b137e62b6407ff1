"""Byte-level pins of the wire: changing any of these breaks host/agent compatibility."""

import io
import struct

import msgpack
import pytest

from provium.protocol import (
    AGENT_KINDS,
    HOST_KINDS,
    PROTOCOL_VERSION,
    CleanEof,
    Envelope,
    ExecArgs,
    ExecOk,
    ExitStatus,
    FrameTooLarge,
    Hello,
    HelloErr,
    HelloOk,
    AgentInfo,
    Message,
    OpenFileArgs,
    OpenMode,
    OpResult,
    OsError,
    SyscallResult,
    TailStart,
    UnexpectedEof,
    WaitArgs,
    WireError,
    WriteFileArgs,
    WriteFileMode,
    decode,
    decode_agent,
    decode_host,
    encode,
    encode_frame,
    read_frame,
)
from provium.protocol.framing import MAX_FRAME, pack
from provium.protocol.types import StreamEnd


def wire(obj) -> bytes:
    return pack(encode(obj))


def test_protocol_version_is_pinned():
    # Bumping it invalidates every cached fixture and every deployed overlay.
    assert PROTOCOL_VERSION == 1


def test_hello_is_small_and_named():
    b = wire(Message.of(Hello()))
    assert len(b) < 80
    assert b"hello" in b and b"protocol_version" in b


def test_hello_ok_and_err_kinds():
    ok = wire(Message.of(HelloOk(1, AgentInfo("linux", "0.1.0", "6.1", []))))
    assert b"hello_ok" in ok
    err = decode(HelloErr, encode(HelloErr(999, 1)))
    assert (err.host_version, err.agent_version) == (999, 1)


def test_op_result_tags_are_short_fixstrs():
    ok = wire(OpResult.success(7))
    assert b"outcome" in ok and b"value" in ok and b"\xa2ok" in ok
    err = wire(OpResult.failure(2, "no such file"))
    assert b"\xa3err" in err and b"error" not in err


def test_syscall_result_omits_empty_out_bufs():
    assert b"out_bufs" not in wire(SyscallResult(ret=0, errno=0))
    full = wire(SyscallResult(ret=1, errno=0, out_bufs=[b"x"]))
    for key in (b"ret", b"errno", b"out_bufs"):
        assert key in full


def test_open_mode_always_carries_six_flags():
    b = wire(OpenFileArgs("/x", OpenMode(read=True)))
    for name in (b"read", b"write", b"create", b"truncate", b"append", b"exclusive"):
        assert name in b
    assert OpenMode() == OpenMode(False, False, False, False, False, False)


def test_exec_args_always_carry_stdin_even_empty():
    m = msgpack.unpackb(wire(ExecArgs("true")))
    assert {"cmd", "args", "env", "stdin"} <= set(m)
    assert m["stdin"] == b""  # bin, not str


def test_bytes_are_msgpack_bin():
    b = wire(ExecOk(ExitStatus.exited(0), b"out", b""))
    assert b"\xc4\x03out" in b


def test_wait_timeout_optional():
    assert decode(WaitArgs, {"handle": 3}).timeout_ms is None
    assert decode(WaitArgs, {"handle": 3, "timeout_ms": 10}).timeout_ms == 10


def test_handles_are_bare_integers():
    m = msgpack.unpackb(wire(WaitArgs(2**64 - 1)))
    assert m["handle"] == 2**64 - 1


def test_tagged_unions_shapes():
    assert encode(ExitStatus.exited(3)) == {"kind": "exited", "value": 3}
    assert encode(ExitStatus.signalled(9)) == {"kind": "signalled", "value": 9}
    assert encode(ExitStatus.timed_out()) == {"kind": "timed_out"}
    assert encode(TailStart()) == {"kind": "end"}
    assert encode(TailStart("offset", 10)) == {"kind": "offset", "value": 10}
    assert encode(StreamEnd()) == {"reason": "eof"}
    assert encode(StreamEnd("error", OsError(5, "io"))) == {"reason": "error", "data": {"errno": 5, "message": "io"}}


def test_write_file_mode_is_snake_string():
    assert encode(WriteFileArgs("/p", b"", WriteFileMode.EXCLUSIVE))["mode"] == "exclusive"


def test_os_error_display_hides_errno_zero():
    assert str(OsError(2, "No such file")) == "No such file (errno 2)"
    assert str(OsError(0, "made up")) == "made up"


def test_envelope_round_trip_every_op_kind_is_registered():
    for kind, tp in HOST_KINDS.items():
        assert getattr(tp, "KIND", kind) == kind
    for op in [k for k in HOST_KINDS.values() if hasattr(k, "REPLY")]:
        assert op.REPLY[0] in AGENT_KINDS
    env = Envelope(9, "exec", ExecArgs("sh", ["-c", "true"], stdin=b"in"))
    assert decode_host(env.to_wire()) == env
    reply = Envelope(9, "exec_result", OpResult.of(ExecOk)(True, ExecOk(ExitStatus.exited(0), b"o", b"e")))
    assert decode_agent(reply.to_wire()) == reply


def test_unknown_kinds_and_bad_shapes_are_rejected_with_channel():
    with pytest.raises(WireError) as e:
        decode_host({"ch": 4, "kind": "format_disk", "data": {}})
    assert e.value.ch == 4 and "format_disk" in str(e.value)
    with pytest.raises(WireError) as e:
        decode_host({"ch": 4, "kind": "exec", "data": {"cmd": 3}})
    assert "cmd" in str(e.value)
    with pytest.raises(WireError):
        decode_host({"ch": -1, "kind": "exec"})


def test_frame_layout_is_be_length_then_body():
    frame = encode_frame({"a": 1})
    (n,) = struct.unpack(">I", frame[:4])
    assert n == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == {"a": 1}


def test_frame_reader_tells_clean_from_mid_frame_eof():
    with pytest.raises(CleanEof):
        read_frame(io.BytesIO(b""))
    with pytest.raises(UnexpectedEof):
        read_frame(io.BytesIO(b"\x00\x00"))
    with pytest.raises(UnexpectedEof) as e:
        read_frame(io.BytesIO(struct.pack(">I", 10) + b"abc"))
    assert e.value.bytes_read == 7 and e.value.expected == 14


def test_oversized_frames_refused_both_ways():
    with pytest.raises(FrameTooLarge):
        read_frame(io.BytesIO(struct.pack(">I", MAX_FRAME + 1)))
    with pytest.raises(FrameTooLarge):
        encode_frame({"d": b"x" * 100}, limit=50)

"""Raw syscall argument forms, open modes and batch reply conversion (no agent needed)."""

import pytest

from provium.host.batch import Batch
from provium.host.errors import ArgumentError
from provium.host.file import parse_open_mode
from provium.host.syscalls import PendingSyscall, build_syscall
from provium.protocol.messages import AgentMessage, DataOk, SyscallResult
from provium.protocol.types import AgentError, AgentErrorKind, NestedPtr, OpenMode, OpResult


def test_integer_forms_pad_and_truncate():
    op = build_syscall("syscall", 39, ())
    assert (op.nr, op.args, op.bufs) == (39, [0] * 6, [])
    assert build_syscall("syscall", 1, (1, 2.9, 3)).args == [1, 2, 3, 0, 0, 0]
    assert build_syscall("syscall", 1, ([4, 5],)).args == [4, 5, 0, 0, 0, 0]
    assert build_syscall("syscall", 1, tuple(range(1, 10))).args == [1, 2, 3, 4, 5, 6]
    # u64 values (flags, pointers) travel as the same bits in an i64.
    assert build_syscall("syscall", 1, (2**64 - 1,)).args[0] == -1
    assert build_syscall("syscall", 5.0, ()).nr == 5


def test_table_form_converts_nested_indices_to_zero_based():
    op = build_syscall("syscall", 46, ({"args": [3, 0, 0], "bufs": [b"\0" * 16, "abc"], "ptrs": [1],
                                        "nested": [{"parent": 1, "child": 2, "offset": 8}]},))
    assert op.args == [3, 0, 0, 0, 0, 0] and op.bufs == [b"\0" * 16, b"abc"] and op.ptrs == [1]
    assert op.nested == [NestedPtr(parent=0, child=1, offset=8)]


@pytest.mark.parametrize("nr, args, needle", [
    (None, (), "syscall(nr, ...): missing nr"),
    ("x", (), "syscall: nr must be integer"),
    (1.5, (), "nr must be integer"),
    (1, ("a",), "arg 1 must be an integer, got string"),
    (1, (True,), "must be an integer, got boolean"),
    (1, (2**64,), "does not fit in 64 bits"),
    (1, ({"args": list(range(7))},), "at most 6 args"),
    (1, ({"bufs": [1]},), "bufs[1] must be a byte string"),
    (1, ({"bufs": [b"x"], "ptrs": [0, 1]},), "2 ptrs but only 1 bufs"),
    (1, ({"bufs": [b"x" * 8], "nested": [{"parent": 1, "child": 3, "offset": 0}]},), "not a buffer index"),
    (1, ({"bufs": [b"x" * 4], "nested": [{"parent": 1, "child": 1, "offset": 0}]},), "does not leave 8 bytes"),
    (1, ({"bogus": 1},), "unknown key `bogus`"),
])
def test_syscall_argument_errors(nr, args, needle):
    with pytest.raises(ArgumentError) as ei:
        build_syscall("syscall", nr, args)
    assert needle in str(ei.value)


def test_pending_syscall_is_one_shot():
    calls = []
    p = PendingSyscall("worker:syscall_async", lambda: calls.append(1) or "done")
    assert p.await_() == "done" and p.awaited
    with pytest.raises(Exception, match="Worker.syscall_async: handle already awaited"):  # Python's names
        getattr(p, "await")()
    assert calls == [1]


@pytest.mark.parametrize("mode, expect, perm", [
    ("r", OpenMode(read=True), None),
    ("rb", OpenMode(read=True), None),
    ("w", OpenMode(write=True, create=True, truncate=True), None),
    ("a+", OpenMode(read=True, append=True, create=True), None),
    ("x", OpenMode(write=True, create=True, exclusive=True), None),
    ("r+", OpenMode(read=True, write=True), None),
    ({"read": True, "perm": 0o600}, OpenMode(read=True), 0o600),
    ({"append": True, "create": True}, OpenMode(append=True, create=True), None),
])
def test_open_modes(mode, expect, perm):
    assert parse_open_mode(mode) == (expect, perm)


@pytest.mark.parametrize("mode, needle", [
    ({}, "must specify at least one of `read`, `write`, `append` (got `{}`"),
    ({"create": True}, "got `{create=true}`"),
    ({"read": "yes"}, "mode key `read` must be a boolean, got string"),
    ({"read": True, "perm": 0o10000}, "`perm` must be an integer permission mask"),
    ("rw", "mode string `rw` is not valid"),
    (5, "second argument must be a mode table"),
])
def test_open_mode_errors(mode, needle):
    with pytest.raises(ArgumentError) as ei:
        parse_open_mode(mode)
    assert needle in str(ei.value)


def test_batch_reply_conversion():
    b = Batch()
    b.read_file("/a")
    b.read_file("/b")
    b.read_file("/c")
    b.syscall(39)
    ok, err, agent_err, sysc = b.items
    assert ok.convert(AgentMessage("read_file_result", OpResult.success(DataOk(b"x")))) == {"ok": b"x"}
    assert err.convert(AgentMessage("read_file_result", OpResult.failure(2, "read_file: /b: nope"))) == \
        {"err": "read_file: /b: nope (errno 2)"}
    assert ok.convert(AgentMessage("read_file_result", OpResult.failure(5, "I/O error"))) == \
        {"err": "read_file `/a`: I/O error (errno 5)"}
    assert agent_err.convert(AgentMessage("agent_error", AgentError(AgentErrorKind.INTERNAL, "boom"))) == \
        {"err": "agent error (internal): boom"}
    assert "expected `syscall_result`" in sysc.convert(AgentMessage("stat_result", None))["err"]
    assert sysc.convert(AgentMessage("syscall_result", SyscallResult(7)))["ok"].ret == 7
    with pytest.raises(ArgumentError, match="Batch.mkdir: unknown option `mode`"):
        b.mkdir("/d", {"mode": 1})
    assert len(b) == 4

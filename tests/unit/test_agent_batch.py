"""batch_exec and batch_op: many requests, one round trip, answers in order."""

from __future__ import annotations

from agent_client_util import inproc_agent
from provium.protocol.messages import (
    BatchExecArgs,
    BatchOpArgs,
    ExecArgs,
    GetTimeArgs,
    Hello,
    HostMessage,
    ReadArgs,
    ReadFileArgs,
    StatArgs,
    TailFileArgs,
    WriteFileArgs,
)


def test_batch_exec_runs_each_item_in_order():
    c = inproc_agent()
    try:
        res = c.ok(BatchExecArgs([
            ExecArgs("echo", ["first"]),
            ExecArgs("/nonexistent/binary"),
            ExecArgs("sh", ["-c", "exit 5"]),
        ]))
        first, missing, five = res.results
        assert first.ok and first.value.stdout == b"first\n"
        assert not missing.ok and missing.value.errno == 2
        assert five.ok and five.value.status.value == 5
        assert c.ok(BatchExecArgs([])).results == []
    finally:
        c.close()


def test_batch_op_answers_every_slot_in_order(tmp_path):
    path = str(tmp_path / "b")
    c = inproc_agent()
    try:
        items = [
            HostMessage.of(WriteFileArgs(path, b"batched")),
            HostMessage.of(ReadFileArgs(path)),
            HostMessage.of(StatArgs(path)),
            HostMessage.of(TailFileArgs(path)),
            HostMessage.of(Hello()),
            HostMessage.of(BatchOpArgs([])),
            HostMessage.of(ReadArgs(77777, 1)),
            HostMessage.of(GetTimeArgs()),
        ]
        out = c.ok(BatchOpArgs(items)).responses
        kinds = [m.kind for m in out]
        assert kinds == ["write_file_result", "read_file_result", "stat_result", "agent_error",
                         "agent_error", "agent_error", "agent_error", "get_time_result"]
        assert out[1].data.value.data == b"batched"
        assert out[2].data.value.size == 7
        for m, kind in zip(out[3:6], ("tail_file", "hello", "batch_op")):
            assert m.data.kind.value == "bad_request"
            assert m.data.message == f"`{kind}` cannot appear inside a batch"
        assert out[6].data.kind.value == "unknown_handle" and "77777" in out[6].data.message
        assert c.ok(BatchOpArgs([])).responses == []
    finally:
        c.close()

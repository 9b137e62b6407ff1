"""A process's output is capped (OUTPUT_CAP per stream) in the agent and on the host."""

from __future__ import annotations

import os
import time

from agent_client_util import spawn_agent

from provium.agent.streams import PROC_CHUNK
from provium.protocol.framing import OUTPUT_CAP, output_marker
from provium.protocol.messages import (
    Credit,
    ExecArgs,
    ExecOk,
    ProcStreamArgs,
    RunAsyncArgs,
    WaitArgs,
)
from provium.protocol.types import ExitStatus

OVER = OUTPUT_CAP + (3 << 20)


def test_exec_and_wait_keep_the_cap_and_say_how_much_was_dropped(agent):
    r = agent.value(ExecArgs("sh", ["-c", f"head -c {OVER} /dev/zero; echo tail >&2"]), timeout=60)
    marker = output_marker("stdout", OVER - OUTPUT_CAP)
    assert len(r.stdout) == OUTPUT_CAP + len(marker)
    assert r.stdout.endswith(marker) and b"3145728 more bytes of stdout dropped" in marker
    assert r.stderr == b"tail\n"  # each stream has its own cap
    h = agent.value(RunAsyncArgs("head", ["-c", str(OVER), "/dev/zero"]))
    r = agent.value(WaitArgs(h, 60000), timeout=60)
    assert r.stdout.endswith(marker) and len(r.stdout) == OUTPUT_CAP + len(marker)


def test_a_stream_reader_gets_the_cap_then_the_marker(agent):
    h = agent.value(RunAsyncArgs("head", ["-c", str(OVER), "/dev/zero"]))
    ch, ack = agent.open_stream(ProcStreamArgs(h))
    assert ack.ok
    data = bytearray()
    while True:
        env = agent.recv(ch, 30)
        if env.kind == "stream_end":
            break
        data += env.data.data
        agent.send(ch, "credit", Credit(len(env.data.data)))
    assert bytes(data[OUTPUT_CAP:]) == output_marker("stdout", OVER - OUTPUT_CAP)
    agent.value(WaitArgs(h))


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_gigabyte_of_stdout_does_not_grow_the_agent():
    c = spawn_agent()
    try:
        t0 = time.monotonic()
        r = c.value(ExecArgs("head", ["-c", str(1 << 30), "/dev/zero"]), timeout=120)
        assert len(r.stdout) < OUTPUT_CAP + 4096
        assert _peak_rss(c.proc.pid) < 200 << 20, "the agent held the output in memory"
        assert time.monotonic() - t0 < 100
    finally:
        c.close()


def test_the_host_cuts_an_uncapped_result_the_same_way():
    from provium.host.results import RunResult

    big = b"x" * (OUTPUT_CAP + 10)
    r = RunResult.from_exec(ExecOk(status=ExitStatus.exited(0), stdout=big, stderr=b"ok"))
    assert r.stdout == b"x" * OUTPUT_CAP + output_marker("stdout", 10)
    assert r.stderr == b"ok"
    capped = b"y" * OUTPUT_CAP + output_marker("stdout", 5)
    assert RunResult.from_exec(ExecOk(status=ExitStatus.exited(0), stdout=capped, stderr=b"")).stdout == capped


def test_chatty_output_arrives_whole_and_in_order_through_grown_pipes(agent, tmp_path):
    # Several MiB in writes of odd sizes: the agent grows a pipe it finds full and
    # reads it 1 MiB at a time; exec, wait and a stream must all keep every byte in order.
    blob = os.urandom(5 << 20)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    cmd = f"dd if={src} bs=12345 2>/dev/null; echo done >&2"
    r = agent.value(ExecArgs("sh", ["-c", cmd]), timeout=60)
    assert r.stdout == blob and r.stderr == b"done\n"
    h = agent.value(RunAsyncArgs("sh", ["-c", cmd]))
    ch, ack = agent.open_stream(ProcStreamArgs(h))
    assert ack.ok
    data = bytearray()
    while True:
        env = agent.recv(ch, 30)
        if env.kind != "stream_frame":
            assert env.kind == "stream_end" and env.data.reason == "eof"
            break
        assert 0 < len(env.data.data) <= PROC_CHUNK  # a quarter of the credit window
        data += env.data.data
        agent.send(ch, "credit", Credit(len(env.data.data)))
    assert bytes(data) == blob
    r = agent.value(WaitArgs(h, 60000), timeout=60)
    assert r.stdout == blob and r.stderr == b"done\n"

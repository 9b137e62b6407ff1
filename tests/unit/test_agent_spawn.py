"""The agent's spawn side: what a command inherits, and the collector's scheduling."""

from __future__ import annotations

import os
import signal

from agent_client_util import inproc_agent
from provium.protocol.messages import ExecArgs

SCHED_BATCH = 3  # the `policy` field of /proc/<pid>/stat


def _policies(pid: int) -> dict[int, int]:
    """{tid: scheduling policy} of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[38])
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return out


def test_a_command_starts_with_every_signal_at_its_default():
    # An ignored signal stays ignored across exec: whatever the agent ignores must
    # not leak into commands (here SIGHUP, besides Python's own SIGPIPE and SIGXFSZ).
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    agent = inproc_agent()  # serves on a thread of this process: it ignores SIGHUP too
    try:
        r = agent.value(ExecArgs("cat", ["/proc/self/status"]))
        (mask,) = [int(line.split()[1], 16) for line in r.stdout.decode().splitlines()
                   if line.startswith("SigIgn:")]
        ignored = {n for n in range(1, 65) if mask >> (n - 1) & 1}
        # 32 and 33 are glibc's own (thread cancellation, set*id): its posix_spawn
        # leaves them ignored whatever it is asked.
        assert ignored <= {32, 33}, ignored
    finally:
        agent.close()
        signal.signal(signal.SIGHUP, old)


def test_exec_collects_as_sched_batch_and_leaves_nothing_batched():
    """While an exec waits for its command, its thread is SCHED_BATCH (the command's
    exit then wakes it once, not three times); the command itself and every thread
    afterwards run under the normal policy."""
    agent = inproc_agent()
    me = os.getpid()
    try:
        # Other tests' agents in this process may still be collecting a command of
        # theirs: count relative to before, not absolute.
        batched_before = list(_policies(me).values()).count(SCHED_BATCH)
        # The command reads the policies of the agent's threads while one of them waits for it.
        r = agent.value(ExecArgs("sh", ["-c", f"cat /proc/{me}/task/*/stat; cat /proc/self/stat"]))
        lines = r.stdout.decode().splitlines()
        agent_threads = [int(line.rsplit(")", 1)[1].split()[38]) for line in lines[:-1]]
        own = int(lines[-1].rsplit(")", 1)[1].split()[38])
        assert agent_threads.count(SCHED_BATCH) >= 1, lines
        assert own == 0  # the command is not batched
        # The reply went out after the reset: no thread stays batched because of it.
        assert list(_policies(me).values()).count(SCHED_BATCH) <= batched_before
    finally:
        agent.close()

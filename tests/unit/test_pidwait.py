"""Waiting for a child's exit on a pidfd: woken at the exit, never reaping, nothing left open."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from provium.vmm.pidwait import ExitWatch, wait_exited


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_wait_exited_wakes_at_the_exit_and_leaves_the_zombie_to_the_caller():
    async def main() -> None:
        proc = subprocess.Popen(["sleep", "30"])
        before = _fds()
        assert await wait_exited(proc.pid, 0.05) is False  # still running: the timeout answers
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, proc.send_signal, signal.SIGKILL)
        started = time.monotonic()
        assert await wait_exited(proc.pid, 30) is True
        assert time.monotonic() - started < 5  # woken by the exit, not by the timeout
        assert proc.returncode is None  # not reaped: the caller's Popen still can
        assert proc.wait(1) == -signal.SIGKILL
        assert await wait_exited(proc.pid, 1) is True  # reaped already: still "exited"
        assert _fds() == before

    asyncio.run(main())


def test_exit_watch_is_a_future_its_owner_closes():
    async def main() -> None:
        before = _fds()
        proc = subprocess.Popen(["sleep", "30"])
        watch = ExitWatch(proc.pid)
        done, _ = await asyncio.wait({watch.exited}, timeout=0.05)
        assert not done
        proc.kill()
        await asyncio.wait_for(watch.exited, 5)
        watch.close()
        proc.wait()
        running = subprocess.Popen(["sleep", "30"])
        other = ExitWatch(running.pid)
        other.close()  # closed before the exit: its pidfd is released all the same
        running.kill()
        running.wait()
        assert _fds() == before

    asyncio.run(main())

"""Waiting for a child process to exit without polling: pidfds.

A pidfd (`os.pidfd_open`, Linux 5.3+) becomes readable the moment its process
exits, so the event loop watches it with `add_reader` and wakes exactly then.
Nothing here reaps the process: the caller decides (`Popen.poll()`), which
matters to the local backend, that kills the process group while its leader is
still an unreaped zombie (its id cannot have been recycled yet).

Every waiter is owned: `wait_exited` removes its reader and closes its fd
before returning, and `ExitWatch` does the same in `close()`.
"""

from __future__ import annotations

import asyncio
import os

# Only for kernels without pidfds (< 5.3), where no exit event exists to wait on.
FALLBACK_POLL = 0.02


def _open(pid: int) -> int | None:
    """A pidfd for `pid`; None if pidfds are missing; -1 if `pid` is already gone (reaped)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except (OSError, AttributeError):
        return None


def _exited_now(pid: int) -> bool:
    """Whether `pid` (our child) has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped


async def wait_exited(pid: int, timeout: float | None) -> bool:
    """True once child `pid` has exited (reaped or not), False if it still runs after
    `timeout` seconds (None: wait for ever).  Does not reap."""
    fd = _open(pid)
    if fd == -1:
        return True
    loop = asyncio.get_running_loop()
    if fd is None:
        deadline = None if timeout is None else loop.time() + timeout
        while not _exited_now(pid):
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(FALLBACK_POLL)
        return True
    done: asyncio.Future[None] = loop.create_future()

    def fire() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, fire)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
        return True
    except asyncio.TimeoutError:
        return _exited_now(pid)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class ExitWatch:
    """`exited` is a future that is done once child `pid` exits; made on the loop that
    awaits it, and stopped by `close()` (its owner's teardown).  Does not reap."""

    def __init__(self, pid: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = self._loop.create_future()
        self._fd: int | None = None
        self._task: asyncio.Task | None = None
        fd = _open(pid)
        if fd == -1:
            self.exited.set_result(None)
        elif fd is None:
            self._task = self._loop.create_task(self._fallback(pid), name=f"exit-watch-{pid}")
        else:
            self._fd = fd
            self._loop.add_reader(fd, self._fire)

    def _fire(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        self._release()

    async def _fallback(self, pid: int) -> None:
        await wait_exited(pid, None)
        if not self.exited.done():
            self.exited.set_result(None)

    def _release(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._release()
        if self._task is not None:
            self._task.cancel()
            self._task = None

"""Starting QEMU so that it can never outlive us, and stopping it for sure.

QEMU is spawned in its own process group with PR_SET_PDEATHSIG = SIGKILL: if the
process (strictly, the thread) that started it dies, even by SIGKILL, the kernel
kills QEMU too.  Spawns therefore happen on the session's long-lived loop thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
from pathlib import Path

PR_SET_PDEATHSIG = 1
_libc = None


def _prctl_pdeathsig(parent: int) -> None:
    # Runs in the child between fork and exec: keep it to async-signal-safe calls.
    global _libc
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def pdeathsig_preexec():
    """A preexec_fn that makes the child die (SIGKILL) with the thread that spawns it."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    return lambda: _prctl_pdeathsig(parent)


def spawn(argv: list[str], *, stderr_path: Path, cwd: Path) -> subprocess.Popen:
    preexec = pdeathsig_preexec()
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=str(cwd),
            process_group=0, preexec_fn=preexec, close_fds=True,
        )


async def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    """Exit code once `proc` has exited, or None if it is still running after `timeout`.

    Waits on a pidfd (readable the moment the process exits) instead of polling;
    the pid cannot be reused meanwhile, since only `proc.poll()` reaps it.
    """
    rc = proc.poll()
    if rc is not None:
        return rc
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):  # no pidfds (Linux < 5.3): poll instead
        return await _poll_exit(proc, timeout)
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        if proc.poll() is None:
            try:
                await asyncio.wait_for(exited.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return proc.poll()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _poll_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            return rc
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.02)


async def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.kill()
    await wait_exit(proc, 5.0)

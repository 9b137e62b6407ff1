"""Starting QEMU so that it can never outlive us, and stopping it for sure.

QEMU is spawned in its own process group with PR_SET_PDEATHSIG = SIGKILL: if the
process (strictly, the thread) that started it dies, even by SIGKILL, the kernel
kills QEMU too.  Spawns therefore happen on the session's long-lived loop thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..pidwait import wait_exited

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


def spawn(argv: list[str], *, stderr_path: Path, cwd: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    preexec = pdeathsig_preexec()
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=str(cwd),
            process_group=0, preexec_fn=preexec, close_fds=True, pass_fds=pass_fds,
        )


def spawn_qemu(argv_for: Callable[[int], list[str]], *, stderr_path: Path,
               cwd: Path) -> tuple[subprocess.Popen, socket.socket, list[str]]:
    """Start QEMU with its QMP monitor on one end of a socketpair; returns the process,
    our end (for `Qmp.connect`) and the argv used.  `argv_for(fd)` builds the argv
    for QEMU's end, which only QEMU keeps open."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = argv_for(theirs.fileno())
        proc = spawn(argv, stderr_path=stderr_path, cwd=cwd, pass_fds=(theirs.fileno(),))
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours, argv


async def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    """Exit code once `proc` has exited, or None if it is still running after `timeout`.

    Waits on a pidfd (readable the moment the process exits: `vmm/pidwait.py`)
    instead of polling; the pid cannot be reused meanwhile, since only
    `proc.poll()` reaps it.
    """
    rc = proc.poll()
    if rc is not None:
        return rc
    await wait_exited(proc.pid, timeout)
    return proc.poll()


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

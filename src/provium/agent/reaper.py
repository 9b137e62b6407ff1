"""Reaping orphans when the agent is PID 1 (a guest with no init of its own).

Orphaned processes (a shell's background job whose shell exited) are handed to
PID 1, which must reap them or they stay zombies forever.  A blanket
`waitpid(-1)` would also steal the exit status of our own children before their
`wait` op sees it, so the reaper reaps only zombies that are not ours: every
spawn registers its pid under `SPAWN_LOCK`, and a reaping pass holds the same
lock, so a child can never be mistaken for an orphan between fork and
registration.
"""

from __future__ import annotations

import os
import threading
import time

SPAWN_LOCK = threading.Lock()
INTERVAL = 0.5
_own: set[int] = set()
_started = False
_start_lock = threading.Lock()


def register(pid: int) -> None:
    """Call with SPAWN_LOCK held, right after the spawn returned the pid."""
    _own.add(pid)


def unregister(pid: int) -> None:
    """Call once our own wait has reaped pid."""
    with SPAWN_LOCK:
        _own.discard(pid)


def _zombie_children(me: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if rest[0] == b"Z" and int(rest[1]) == me:
            out.append(int(name))
    return out


def reap_once() -> int:
    """Reap every zombie child that is not one of ours; how many were reaped."""
    n = 0
    with SPAWN_LOCK:
        for pid in _zombie_children(os.getpid()):
            if pid in _own:
                continue
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    n += 1
            except ChildProcessError:
                pass
    return n


def _loop() -> None:
    while True:
        time.sleep(INTERVAL)
        try:
            reap_once()
        except Exception:  # /proc hiccups must not end the reaper
            pass


def ensure_started() -> None:
    """Start the reaper thread once, if this process is PID 1."""
    global _started
    if os.getpid() != 1:
        return
    with _start_lock:
        if not _started:
            _started = True
            threading.Thread(target=_loop, daemon=True, name="orphan-reaper").start()

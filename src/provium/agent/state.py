"""What the agent remembers between ops: open files, processes, workers.

One counter hands out every handle (files, processes and workers alike), starting
at 1 and never reusing a number, so a stale handle of one kind can never name a
live object of another.  0 means "no handle".  The state outlives a connection:
after a VM restore the host reconnects and finds its files and processes where
it left them.
"""

from __future__ import annotations

import os
import threading
TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any


_PRUNE_AT = 64


class FileEntry:
    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path


class AgentState:
    def __init__(self, *, local: bool = False, worker: bool = False) -> None:
        # local: the agent runs on the host (local backend); it must never change
        # the host's clock.  worker: this process is a worker sub-agent.
        self.local = local
        self.worker = worker
        self.lock = threading.Lock()
        self._next_handle = 1
        self.files: dict[int, FileEntry] = {}
        self.procs: dict[int, Any] = {}  # handle -> procs.Proc
        self.workers: dict[int, Any] = {}  # handle -> workers.WorkerLink
        self.worker_procs: dict[int, tuple[int, int]] = {}  # our handle -> (worker, its handle)
        self.async_calls: dict[int, Any] = {}  # worker_syscall_begin ids run here
        self._next_async = 1
        # Process groups of the children we started: what they left running
        # (a daemon started with `&`) is killed with the agent.  Groups found
        # empty are dropped as the set grows.
        self.groups: set[int] = set()
        self._prune_at = _PRUNE_AT

    def new_handle(self) -> int:
        with self.lock:
            h = self._next_handle
            self._next_handle += 1
            return h

    def add(self, table: dict, obj: Any) -> int:
        with self.lock:
            h = self._next_handle
            self._next_handle += 1
            table[h] = obj
            return h

    def get(self, table: dict, handle: int) -> Any:
        with self.lock:
            return table.get(handle)

    def pop(self, table: dict, handle: int) -> Any:
        with self.lock:
            return table.pop(handle, None)

    def track_group(self, pgid: int) -> None:
        with self.lock:
            self.groups.add(pgid)
            if len(self.groups) < self._prune_at:
                return
            groups = list(self.groups)
        from .children import group_alive

        dead = {g for g in groups if not group_alive(g)}
        with self.lock:
            self.groups -= dead
            # Many live groups (daemons) must not make every spawn scan them all.
            self._prune_at = max(_PRUNE_AT, 2 * len(self.groups))

    def new_async_id(self) -> int:
        with self.lock:
            n = self._next_async
            self._next_async += 1
            return n

    def shutdown(self) -> None:
        """Release everything: kill our processes and what they left running, close files, join workers.

        Called when a local-backend agent or a worker ends, so nothing it started
        outlives it.  (A guest agent keeps its state across reconnects instead.)
        """
        with self.lock:
            procs = list(self.procs.values())
            files = list(self.files.values())
            workers = list(self.workers.values())
            self.procs.clear()
            self.files.clear()
            self.workers.clear()
            self.worker_procs.clear()
            groups = list(self.groups)
            self.groups.clear()
        for p in procs:
            try:
                p.destroy()
            except Exception:
                pass
        from .children import kill_leftover_group

        for g in groups:
            kill_leftover_group(g)
        for f in files:
            try:
                os.close(f.fd)
            except OSError:
                pass
        for w in workers:
            try:
                w.join()
            except Exception:
                pass

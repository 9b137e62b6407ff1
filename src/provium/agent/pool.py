"""Reusable threads for requests.

Starting a thread per request was the largest single cost of a short op
(most of all inside an emulated guest).  A request still never waits for
another: it goes to a thread that is idle *now*, or to a new one.  Threads
that finish go back to the idle set, up to `MAX_IDLE`; the others end.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from collections.abc import Callable

MAX_IDLE = 8


class Pool:
    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle = 0  # threads blocked (or about to block) on _tasks
        self._tasks: SimpleQueue = SimpleQueue()

    def submit(self, fn: Callable, *args) -> None:
        """Run fn(*args) on an idle thread or a new one; never queues behind busy work."""
        with self._lock:
            if self._idle:
                # Counted out under the lock: exactly one idle thread takes this.
                self._idle -= 1
                self._tasks.put((fn, args))
                return
        threading.Thread(target=self._work, args=(fn, args), daemon=True, name="agent-worker").start()

    def fresh(self, fn: Callable, *args) -> None:
        """Run fn(*args) on a thread of its own that ends with it.

        For raw system calls: per-thread state they change (credentials,
        namespaces, signal masks) must not leak into later requests.
        """
        threading.Thread(target=fn, args=args, daemon=True, name="agent-raw").start()

    def _work(self, fn: Callable, args: tuple) -> None:
        while True:
            fn(*args)  # the callers catch their own exceptions
            fn = args = None  # type: ignore[assignment]  # drop references while idle
            with self._lock:
                if self._idle >= self.max_idle:
                    return
                self._idle += 1
            fn, args = self._tasks.get()


POOL = Pool()

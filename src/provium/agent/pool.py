"""Reusable threads for requests.

Starting a thread per request was the largest single cost of a short op
(most of all inside an emulated guest).  A request still never waits for
another: it goes to a thread that is idle *now*, or to a new one.  Threads
that finish go back to the idle set, up to `MAX_IDLE`; the others end.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any

MAX_IDLE = 8


class _Worker:
    __slots__ = ("wake", "task")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held until a task is handed over
        self.task: tuple | None = None


class Pool:
    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def submit(self, fn, *args) -> None:
        """Run fn(*args) on an idle thread or a new one; never queues behind busy work.

        fn must catch its own exceptions.
        """
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.task = (fn, args)
                worker.wake.release()
                return
        threading.Thread(target=self._work, args=(fn, args), daemon=True, name="agent-worker").start()

    def fresh(self, fn, *args) -> None:
        """Run fn(*args) on a thread of its own that ends with it.

        For raw system calls: per-thread state they change (credentials,
        namespaces, signal masks) must not leak into later requests.
        """
        threading.Thread(target=fn, args=args, daemon=True, name="agent-raw").start()

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def _work(self, fn: Any, args: Any) -> None:
        me = _Worker()
        while True:
            fn(*args)
            fn = args = None  # drop references while idle
            with self._lock:
                if len(self._idle) >= self.max_idle:
                    return
                self._idle.append(me)
            me.wake.acquire()
            fn, args = me.task  # type: ignore[misc]  # set by whoever woke us
            me.task = None


POOL = Pool()

"""The request thread pool: reuse without ever queueing behind busy work."""

from __future__ import annotations

import threading
import time

from agent_client_util import inproc_agent
from provium.agent import server
from provium.agent.pool import Pool
from provium.protocol.messages import GetPidArgs, RunAsyncArgs, SyscallArgs, WaitArgs


def test_busy_threads_never_delay_a_new_task():
    pool = Pool(max_idle=2)
    release = threading.Event()
    started = []
    for i in range(5):  # more than max_idle, all blocked at once
        pool.submit(lambda i=i: (started.append(i), release.wait(5)))
    deadline = time.monotonic() + 5
    while len(started) < 5:
        assert time.monotonic() < deadline, f"only {started} started"
        time.sleep(0.01)
    release.set()
    deadline = time.monotonic() + 5
    while pool.idle() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    assert pool.idle() == 2  # the others ended instead of piling up


def test_idle_threads_are_reused():
    pool = Pool()
    idents = []
    for _ in range(20):
        done = threading.Event()
        pool.submit(lambda done=done: (idents.append(threading.get_ident()), done.set()))
        assert done.wait(5)
        time.sleep(0.005)  # let the worker get back to the idle set
    assert len(set(idents)) <= 2


def test_raw_calls_get_a_thread_of_their_own(monkeypatch):
    used = []
    real = server.POOL

    class Recording:
        def submit(self, fn, *args):
            used.append(("pool", args[1].kind))
            real.submit(fn, *args)

        def fresh(self, fn, *args):
            used.append(("fresh", args[1].kind))
            real.fresh(fn, *args)

    monkeypatch.setattr(server, "POOL", Recording())
    c = inproc_agent()
    try:
        assert c.ok(SyscallArgs(39)).ret > 0  # getpid: per-thread state changes must not leak
        h = c.value(RunAsyncArgs("true"))
        assert c.value(GetPidArgs(h)) > 0
        assert c.value(WaitArgs(h)).status.value == 0
    finally:
        c.close()
    assert used == [("fresh", "syscall"), ("pool", "run_async"), ("pool", "get_pid"), ("pool", "wait")]

"""The keeper of a local-backend agent: nothing the agent started outlives it.

On the local backend the agent runs on the host, and what it starts (commands,
`&` daemons, `setsid` daemons that leave its process groups and session) would
otherwise live on after the agent is gone.  The agent cleans up when it ends
normally, but it cannot when it is SIGKILLed, and a SIGSTOPped agent cannot act
on the SIGTERM that asks it to.  So `--keeper` splits the process in two right
at start (a fork, no second interpreter start):

* the child serves as the agent;
* the parent, the keeper, is a *child subreaper* (PR_SET_CHILD_SUBREAPER): any
  process orphaned below it — a double-forked or `setsid` daemon included — is
  re-parented to the keeper instead of init, so everything the agent ever
  started stays in the keeper's subtree.  The keeper reaps those orphans.

When the agent exits, however it ends, the keeper SIGKILLs its whole remaining
subtree and exits with the agent's status.  When the keeper is asked to stop
(SIGTERM, SIGINT, SIGHUP — the parent's death signal included), it wakes the
agent (SIGCONT: a stopped process cannot act on SIGTERM), SIGTERMs it, gives
it GRACE seconds to clean up, then SIGKILLs it and the rest.

Linux-only (prctl); without it the keeper still kills its own children's trees.
"""

from __future__ import annotations

import os
import signal
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE = 2.0  # seconds a stopping agent gets to kill what it started itself


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl: keep going without it
        return False


def split(close_in_keeper: list[int]) -> None:
    """Fork: return in the child (the agent); never return in the parent (the keeper)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # before the fork: no orphan can slip past us
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        # The agent: ends (cleanly, with SIGTERM) when the keeper does.
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
        return
    for fd in close_in_keeper:  # the served socket belongs to the agent alone
        try:
            os.close(fd)
        except OSError:
            pass
    os._exit(keep(pid))


def keep(agent: int) -> int:
    """Serve as the keeper of `agent` (our child) until it is gone; its exit status."""
    stopping: list[int] = []

    def on_stop(signum, frame) -> None:
        if not stopping:
            stopping.append(signum)
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(agent, sig)
                except OSError:
                    pass
            signal.setitimer(signal.ITIMER_REAL, GRACE)  # then SIGALRM: no more waiting

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGALRM, lambda signum, frame: _kill(agent))
    status = 1
    while True:
        # Blocks; a signal runs its handler and the wait resumes (PEP 475).
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break  # no child at all: the agent is gone too
        if pid == agent:
            status = os.waitstatus_to_exitcode(st)
            break
        # else an orphan re-parented to us: reaped
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    kill_subtree(os.getpid())
    return status if status >= 0 else 128 - status


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(name))
    return out


def kill_subtree(root: int, timeout: float = 5.0) -> None:
    """SIGKILL every descendant of `root` (a subreaper: orphans come back to it), reap them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = _children_map()
        todo = list(tree.get(root, []))
        if not todo:
            break
        seen = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            _kill(pid)  # stopped processes die of SIGKILL too
            todo.extend(tree.get(pid, []))
        while True:  # reap what died; the next scan finds anything it left
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
                break

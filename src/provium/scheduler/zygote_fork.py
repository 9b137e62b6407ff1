"""The runner zygote forked from the `provium` process itself, at its very start.

`provium` on one file waits for two things: its own imports (click, the
scheduler, the reporters) and the zygote's (lupa, the runner).  Spawning the
zygote costs a whole interpreter start before its imports even begin; forking
the `provium` process right after its own start gives a zygote at once, whose
imports then run on the second core while the CLI imports its own.

Forking is safe only while the process is bare: one thread, no event loop, no
open sockets or consoles of the CLI, nothing a runner should inherit.  So it
happens only from the `provium` command's entry point (cli/main.py `main`),
before it imports anything heavy, and only when this process has one thread.
A program that calls `dispatch` in-process (tests, embedders) spawns the zygote
(`python -m provium.runner.zygote`) as before; so does a failed fork.

What both processes import anyway (the config and event types, logging,
subprocess, sockets: `COMMON`, about half of either side's imports) is imported
once, before the fork: on two idle cores that costs the run nothing (the CLI
needs them first thing, and the zygote's remaining imports still overlap the
CLI's), and on a loaded machine it saves the zygote that much CPU.  Nothing in
them starts a thread or holds anything open.

Apart from `COMMON`, this module imports nothing beyond what the interpreter has
loaded at start (os, sys).  The parent keeps raw descriptors; zygote_client.py
wraps them (`take`).
"""

from __future__ import annotations

import os
import sys

__all__ = ["Forked", "discard", "pending", "start", "take", "unsafe_to_fork"]


class Forked:
    """A zygote forked from this process: its pid, the control socket's descriptor
    (SOCK_SEQPACKET) and the read end of the pipe its stdout and stderr go to."""

    def __init__(self, pid: int, ctl_fd: int, err_fd: int) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self.err_fd = err_fd


_pending: Forked | None = None

# Imported by both the CLI's run path and every runner (`python -X importtime`
# of each side, intersected).
COMMON = (
    "provium.config",
    "provium.events.types",
    "provium.events.sinks",
    "provium.runner.settings",
    "provium.runner.outcome",
    "provium.runner.zygote",
    "provium.artifacts",
    "provium.log",
    "provium.host.values",
    "provium.scheduler.coordinator",
    "concurrent.futures",
    "subprocess",
    "tempfile",
    "gettext",
    "difflib",  # the zygote's Lua error texts; click's parser for a short flag (-q, -v)
)


def unsafe_to_fork() -> str | None:
    """Why this process must not be forked into a zygote now, or None."""
    if not hasattr(os, "fork") or not hasattr(os, "pidfd_open"):
        return "this platform lacks fork or pidfd_open"
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return "cannot count this process's threads (/proc/self/task)"
    if threads != 1:
        return f"this process has {threads} threads"
    if "asyncio" in sys.modules:
        return "this process has imported asyncio"
    return None


def start() -> Forked | None:
    """Fork a zygote now (see the module's docstring); None when it cannot be done
    here (the caller spawns one instead).  From the thread that will run the
    dispatcher: the zygote dies when that thread ends."""
    global _pending
    if _pending is not None:
        return _pending
    if unsafe_to_fork() is not None:
        return None
    from importlib import import_module

    for name in COMMON:
        try:
            import_module(name)
        except Exception:  # noqa: BLE001, S112 - the CLI meets it again and reports it properly
            continue
    if unsafe_to_fork() is not None:  # nothing in COMMON should start a thread; make sure
        return None
    import socket  # loaded by COMMON already

    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except (OSError, AttributeError):
        return None
    ctl_fd, child_fd = ours.detach(), theirs.detach()
    err_r, err_w = os.pipe()
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # nothing buffered may be written twice
        except (AttributeError, OSError, ValueError):
            pass
    try:
        pid = os.fork()
    except OSError:
        for fd in (ctl_fd, child_fd, err_r, err_w):
            os.close(fd)
        return None
    if pid == 0:
        _child(parent, ctl_fd, child_fd, err_r, err_w)  # never returns
    os.close(child_fd)
    os.close(err_w)
    os.set_blocking(err_r, False)
    _pending = Forked(pid, ctl_fd, err_r)
    return _pending


def _child(parent: int, ctl_fd: int, child_fd: int, err_r: int, err_w: int) -> None:
    """In the forked zygote: become what `python -m provium.runner.zygote` would be
    (own session, stdin /dev/null, output to the pipe), then serve.  Never returns."""
    code = 2
    try:
        os.close(ctl_fd)
        os.close(err_r)
        import atexit

        atexit._clear()  # the CLI's exit handlers are not the zygote's (nor its runners')
        os.setsid()  # as start_new_session=True: Ctrl-C in the terminal reaches provium, not us
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(err_w, 1)
        os.dup2(err_w, 2)
        os.close(err_w)
        sys.argv = ["provium-zygote"]
        from provium.runner import zygote

        code = zygote.run(child_fd, parent=parent)
    except BaseException:  # noqa: BLE001 - printed to the pipe the dispatcher reads; it then spawns runners
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001, S110
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110
            pass
        os._exit(code)


def pending() -> Forked | None:
    return _pending


def take() -> Forked | None:
    """The forked zygote, now owned by the caller (zygote_client.py)."""
    global _pending
    z, _pending = _pending, None
    return z


def discard() -> None:
    """Stop a forked zygote nobody took (the run ended before it dispatched)."""
    z = take()
    if z is None:
        return
    import signal

    os.close(z.ctl_fd)
    os.close(z.err_fd)
    try:
        os.kill(z.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(z.pid, 0)

"""The dispatcher's side of the runner zygote (`provium.runner.zygote`).

The dispatcher starts one zygote per run, from its own thread (the zygote's
PR_SET_PDEATHSIG follows that thread, as a spawned runner's does), and asks it
for one forked runner per file.  A forked runner is not the dispatcher's child:
its exit status comes from the zygote over the control socket, and `ForkedProc`
wraps that in the part of `subprocess.Popen` the dispatcher uses (`pid`,
`poll`, `wait`, `returncode`), so the rest of dispatch.py does not care how a
runner was started.

When the zygote is off, cannot start, refuses to fork or dies, the dispatcher
spawns runners as before (`python -m provium.runner`); `Zygote.unavailable`
says why, and the dispatcher prints it once.  Runners the zygote had started
die with it (their parent-death signal) and fail as crashed, naming the zygote.
Turn it off with `--no-zygote` or PROVIUM_NO_ZYGOTE=1.

The CLI starts the zygote before it imports its own run machinery and reads the
config (`start_early`), so the zygote's imports and the CLI's overlap on two
cores; the dispatcher adopts it (`adopt`).  The `provium` command forks it from
itself at its start (zygote_fork.py, taken over here); other callers spawn it.
That is why each request carries the runner's environment and directory: they
are not known when the zygote starts.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from provium.errors import HostSetupError
from provium.runner.zygote import CONTROL_FD_ARG, EVENTS_FD, MAX_MSG

from . import zygote_fork

__all__ = ["EVENTS_FD", "ENV_OFF", "ForkedProc", "Zygote", "adopt", "default_zygote_cmd", "disabled_by_env",
           "discard_early", "fork_unsupported", "start_early"]

ENV_OFF = "PROVIUM_NO_ZYGOTE"
READY_TIMEOUT = 60.0  # seconds for the zygote's imports; a loaded machine can take several


def default_zygote_cmd() -> list[str]:
    return [sys.executable, "-m", "provium.runner.zygote"]


def disabled_by_env(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(ENV_OFF, "")
    return value.strip().lower() not in ("", "0", "no", "false", "off")


def fork_unsupported() -> str | None:
    """Why this platform cannot fork runners, or None."""
    if not hasattr(os, "fork") or not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
        return "this platform lacks fork, pidfd_open or descriptor passing"
    if not hasattr(socket, "SOCK_SEQPACKET"):
        return "this platform lacks SOCK_SEQPACKET sockets"
    return None


class ZygoteGone(HostSetupError):
    """Internal: the zygote's socket closed (the dispatcher then spawns runners)."""


class _Child:
    """The zygote forked from this process (zygote_fork.py): the part of
    `subprocess.Popen` that `Zygote` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if timeout is not None:
                fd = os.pidfd_open(self.pid)
                try:
                    exited, _, _ = select.select([fd], [], [], timeout)
                finally:
                    os.close(fd)
                if not exited:
                    raise subprocess.TimeoutExpired(["provium-zygote"], timeout)
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class ForkedProc:
    """A runner forked by the zygote, seen like a `subprocess.Popen`."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.note: str | None = None  # why the status is not the runner's own (the zygote died)
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already reaped by the zygote: its status is on the way
            self.pidfd = None

    def _settle(self) -> int | None:
        if self.returncode is None:
            code = self.zygote.exit_code(self.pid)
            if code is not None:
                self.returncode = code
            elif self.zygote.dead:
                self._orphaned()
        if self.returncode is not None and self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return self.returncode

    def _orphaned(self) -> None:
        """The zygote died before reporting this runner: its death signal kills it;
        make sure, wait for it, and say so."""
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:
                pass
            select.select([self.pidfd], [], [], 10.0)
        self.returncode = -signal.SIGKILL
        self.note = f"the runner zygote died ({self.zygote.dead})"

    def poll(self) -> int | None:
        self.zygote.pump()
        return self._settle()

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._settle() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(["provium-runner"], timeout or 0.0)
            self.zygote.pump(left)
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """One zygote process and its control socket; everything runs on the dispatcher's thread."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None,
                 forked: zygote_fork.Forked | None = None) -> None:
        """Spawn `cmd` as the zygote, or take over `forked`, one forked from this
        process (zygote_fork.py), which then stands for `cmd`."""
        self.cmd = cmd
        self.unavailable: str | None = None  # why runners are spawned instead (None: the zygote works)
        self.dead: str | None = None
        self.ready = False
        self._exits: dict[int, int] = {}
        self._replies: list[dict] = []
        self._err = bytearray()
        self.proc: subprocess.Popen | _Child | None
        if forked is not None:
            self.sock = socket.socket(fileno=forked.ctl_fd)
            self._err_fd: int | None = forked.err_fd
            self.proc = _Child(forked.pid)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        # The zygote's own output (a failed import's traceback) comes back on a pipe: no
        # file to clean up; its runners write to their files' logs instead.
        err_r, err_w = os.pipe()
        os.set_blocking(err_r, False)
        self._err_fd = err_r
        try:
            self.proc = subprocess.Popen(
                [*cmd, CONTROL_FD_ARG, str(theirs.fileno())], stdin=subprocess.DEVNULL,
                stdout=err_w, stderr=err_w, pass_fds=(theirs.fileno(),), start_new_session=True, env=env)
        except OSError as exc:
            self.proc = None
            self.unavailable = f"cannot start `{cmd[0]}`: {exc.strerror or exc}"
            self.dead = self.unavailable
            ours.close()
        finally:
            theirs.close()
            os.close(err_w)

    def fileno(self) -> int:
        return self.sock.fileno()

    # ---- messages ------------------------------------------------------------

    def _recv(self, timeout: float | None) -> dict | None:
        """One message, or None when none came within `timeout`; ZygoteGone at EOF."""
        if self.dead:
            raise ZygoteGone(self.dead)
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        try:
            data = self.sock.recv(MAX_MSG)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self._died()
            raise ZygoteGone(self.dead)
        return json.loads(data)

    def _died(self) -> None:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if code is None:
            why = "its socket closed"
        elif code < 0:
            why = f"killed by {signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code}"
        else:
            why = f"exited with status {code}"
        tail = self.stderr_tail()
        self.dead = why + (f": {tail}" if tail else "")
        if self.unavailable is None:
            self.unavailable = f"the runner zygote died ({self.dead})"

    def stderr_tail(self) -> str:
        """The last of what the zygote printed, on one line."""
        while self._err_fd is not None:
            try:
                chunk = os.read(self._err_fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._err += chunk
            del self._err[:-600]
        return " ".join(self._err.decode("utf-8", "replace").split())

    def _take(self, msg: dict) -> None:
        if "exited" in msg:
            self._exits[int(msg["exited"])] = int(msg["code"])
        else:
            self._replies.append(msg)

    def pump(self, timeout: float | None = 0.0) -> None:
        """Read what the zygote has sent (waiting up to `timeout` for the first message)."""
        if self.dead:
            return
        self.stderr_tail()  # drain its output pipe, so a chatty zygote never blocks on it
        try:
            msg = self._recv(timeout)
            while msg is not None:
                self._take(msg)
                msg = self._recv(0.0)
        except ZygoteGone:
            pass

    def _reply(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while not self._replies:
            left = deadline - time.monotonic()
            if left <= 0 or self.dead:
                return None
            self.pump(left)
        return self._replies.pop(0)

    def exit_code(self, pid: int) -> int | None:
        return self._exits.pop(pid, None)

    # ---- what the dispatcher calls ---------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        if self.ready or self.unavailable:
            return self.ready
        msg = self._reply(timeout)
        if msg is not None and "ready" in msg:
            self.ready = True
        elif msg is not None and "error" in msg:
            self.unavailable = f"the runner zygote could not start: {msg['error']}"
        elif self.dead:
            self.unavailable = f"the runner zygote died before it was ready ({self.dead})"
        else:
            self.unavailable = f"the runner zygote was not ready within {timeout:g}s"
        return self.ready

    def fork(self, args: list[str], events_fd: int, log_fd: int, env: dict[str, str] | None = None,
             cwd: str | None = None) -> ForkedProc | None:
        """A runner for `args` (with environment `env` and directory `cwd`, default this
        process's), or None (then `unavailable` says why, and the caller spawns)."""
        if not self.wait_ready():
            return None
        request = {"run": args, "env": dict(os.environ) if env is None else env, "cwd": cwd or os.getcwd()}
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], [events_fd, log_fd])
        except OSError as exc:
            self._died()
            self.unavailable = self.unavailable or f"cannot reach the runner zygote: {exc}"
            return None
        msg = self._reply(READY_TIMEOUT)
        if msg is not None and "started" in msg:
            return ForkedProc(self, int(msg["started"]))
        if msg is not None and "refused" in msg:
            self.unavailable = f"the runner zygote refused to fork: {msg['refused']}"
        elif self.unavailable is None:
            self.unavailable = "the runner zygote did not answer"
        return None

    def close(self) -> None:
        """Stop the zygote.  Its runners have ended or been killed by now, so it has
        nothing left to do or to clean up: it is killed rather than asked (one busy
        with an idle import would notice the closed socket only after it)."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc is not None:
            # The pid, and its group (a spawned zygote leads one, a forked one once it
            # has called setsid, which it may not have done yet).
            for kill in (os.kill, os.killpg):
                try:
                    kill(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.wait()
        if self._err_fd is not None:
            os.close(self._err_fd)
            self._err_fd = None


# ---- started early by the CLI --------------------------------------------------------

_early: Zygote | None = None


def start_early(cmd: list[str] | None = None) -> None:
    """Start a zygote now, for the dispatcher of this run to adopt: the one the CLI
    forked from this process at its start (zygote_fork.py) if there is one, else a
    spawned one.  From the thread that will run the dispatcher: the zygote dies
    when that thread ends."""
    global _early
    want = cmd or default_zygote_cmd()
    if _early is not None and _early.cmd == want and not _early.dead:
        return  # already started (cli/main.py starts it before the flags are parsed)
    forked = zygote_fork.take() if want == default_zygote_cmd() else None
    discard_early()
    if forked is not None:
        _early = Zygote(want, forked=forked)
    elif fork_unsupported() is None:
        _early = Zygote(want)


def adopt(cmd: list[str]) -> Zygote | None:
    """The zygote started early, if it was started with `cmd` (the caller owns it now)."""
    global _early
    z, _early = _early, None
    if z is not None and z.cmd != cmd:
        z.close()
        return None
    return z


def discard_early() -> None:
    """Stop a zygote started early that no dispatcher adopted (the run ended before)."""
    global _early
    zygote_fork.discard()
    z, _early = _early, None
    if z is not None:
        z.close()

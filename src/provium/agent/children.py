"""Child processes: starting them, noticing their exit, collecting their output.

Every child leads a new process group (so a timeout can kill what it started
too) and gets three pipes.  Its exit is watched through a pidfd, which polls
readable the moment the process ends, next to the pipes: no sleeping loops.

What a child leaves behind may keep its pipes open: a daemon started with
`&`, or the `sleep` a killed `sh -c` was waiting for.  Those descendants are
not what the op asked about, so once the direct child has exited we read on
only until the pipes close or go quiet (`EXIT_GRACE`), return what we have, and
hand the pipes to a sink thread that drains and drops whatever still comes, so
the daemon neither blocks on a full pipe nor dies of SIGPIPE.  They keep
running; the local backend kills their groups when the agent itself ends.
"""

from __future__ import annotations

import os
import select
import threading
import time

from provium.protocol.framing import BLOB_MIN, OUTPUT_CAP, Blob, output_marker

from . import base, reaper

# After the direct child exits its pipes close at once, unless a descendant
# holds them.  We keep listening while output still flows from such a helper
# (one that is finishing too usually has its last words in flight) and stop
# once the pipes have been idle this long: a few scheduler ticks even in a
# loaded TCG guest, yet short enough that `exec("mydaemon &")` still feels
# instant.
EXIT_GRACE = 0.15
# ... but never longer than this after the exit, however chatty the helper.
EXIT_GRACE_MAX = 1.0
KILL_GRACE = 1.0  # after SIGKILL to the group, how long to wait for the child to go
SLICE = 0.1  # how often a blocked loop looks at cancellation (and, without pidfd, at the exit)
SIGKILL = 9  # the same on every Linux architecture
CHUNK = 65536
# A pipe that a read finds full is grown to this (the default pipe-max-size)
# and read this much at a time: a chatty command then costs the collector a
# wake-up per 1 MiB instead of per 64 KiB, and blocks its writer less.
BIG_CHUNK = 1 << 20
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


_BATCH_OK: bool | None = None  # decided on first use: only from the normal policy


def batched() -> bool:
    """Make the calling thread SCHED_BATCH while it waits for its child; True if it did.

    A child that exits closes its stdout, then its stderr, then signals its
    pidfd.  Each of these wakes the thread collecting it, and under the normal
    policy a woken thread preempts the exiting child at once: a short command
    then costs three wake-ups and six context switches (each a full TLB flush
    under TCG, which switches address spaces) instead of one and two.  A
    SCHED_BATCH thread is woken without preempting anyone, so the child
    finishes its exit and one poll sees all three events.  Set after the spawn
    (the child must not inherit it) and undone by `unbatched`; per thread.
    """
    global _BATCH_OK
    try:
        if _BATCH_OK is None:
            _BATCH_OK = os.sched_getscheduler(0) == os.SCHED_OTHER
        if _BATCH_OK:
            os.sched_setscheduler(0, os.SCHED_BATCH, _PARAM0)
            return True
    except (AttributeError, OSError):  # no such policy, or a sandbox forbids it
        _BATCH_OK = False
    return False


def unbatched() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, _PARAM0)
    except OSError:
        pass


_PARAM0 = os.sched_param(0)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel < 5.3, or a sandbox forbids it: poll instead
        return None


class Child:
    """One spawned process: pid, our ends of its pipes, and its exit code once reaped.

    `lock` guards reaping: `kill` holds it too, so a signal can never reach a
    pid that was reaped (and possibly reused) in between.
    """

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int, popen=None) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self.lock = threading.Lock()
        # A subprocess.Popen (cwd given) is kept alive and told the exit code, so
        # its finaliser never reaps the child behind our back.
        self._popen = popen
        self.pidfd = _pidfd(pid)

    def exited(self) -> bool:
        """Whether the child has ended (reaped or not); never reaps it."""
        if self.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def wait_exit(self, timeout: float | None, ctx=None) -> bool:
        """Block until the child has ended (True), `timeout` passed or ctx was cancelled (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = None
        fd = self.pidfd
        if fd is not None:
            poller = select.poll()
            poller.register(fd, _POLLIN)
        while not self.exited():
            step = SLICE if ctx is not None or poller is None else 1.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                step = min(step, left)
            if ctx is not None and ctx.cancelled:
                return False
            if poller is not None:
                poller.poll(int(step * 1000) + 1)
            else:
                time.sleep(min(step, 0.02))
        return True

    def reap(self) -> int:
        """Collect the exit code (blocks until the child ends): -N for signal N."""
        with self.lock:
            if self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:  # reaped elsewhere: the status is lost
                    self.returncode = 255
                reaper.unregister(self.pid)
                if self._popen is not None:
                    self._popen.returncode = self.returncode
            return self.returncode

    def kill(self, sig: int) -> None:
        """Signal the child only.  Raises OSError; one that has ended is left alone."""
        with self.lock:
            if not self.exited():
                os.kill(self.pid, sig)

    def killpg(self, sig: int = SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except OSError:
            pass  # the group is already gone

    def close_pidfd(self) -> None:
        with self.lock:
            fd, self.pidfd = self.pidfd, None
        if fd is not None:
            os.close(fd)


# ---- starting ----------------------------------------------------------------------

_SIGDEF: frozenset = frozenset()


def _sigdef() -> frozenset:
    """The signals a child gets at their default disposition: all of them.

    Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored
    across exec (a child would never die of a closed pipe); whatever else the
    agent ignores must not leak into commands either.  Naming every signal is
    also the cheapest way for glibc's posix_spawn: for a signal not named, its
    child first asks the current disposition and then sets it (about 120
    rt_sigaction calls per spawn, while the agent waits in vfork); for a named
    one it only sets it (about 60).  SIGKILL and SIGSTOP cannot be changed, and
    cannot be blocked, so glibc skips them unless named.
    """
    global _SIGDEF
    if not _SIGDEF:
        import signal

        _SIGDEF = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    return _SIGDEF


def unprotect(pid: int) -> None:
    """Give child `pid` the default OOM score back (a child inherits our -1000).

    posix_spawn cannot set it before exec, and a preexec hook would force a full
    fork; so there is a window of a few microseconds, from exec until this write,
    in which the child is still immune.  It cannot allocate much in that time, so
    the OOM killer still finds the runaway command, never the agent."""
    if not base.OOM_PROTECTED:
        return
    try:
        # Plain descriptors, not open(): a Python file object is three objects
        # to build and tear down per command, a visible cost under emulation.
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return  # it already exited
    try:
        os.write(fd, b"0")
    except OSError:
        pass
    finally:
        os.close(fd)


def spawn(cmd: str, args: list[str], env: dict, cwd: str | None) -> Child:
    """Start `cmd args` in a new process group with three pipes; `env` from child_env().

    Raises OSError (with `filename` = the command) when it cannot start, or
    ValueError/TypeError for arguments the OS cannot take (a NUL byte).  A
    bare name is looked up in the PATH of `env`, as execvp(3) would.

    posix_spawn (a vfork underneath) when possible: much less work per start
    than subprocess, which counts inside a slow guest.  Everything the agent
    opens is close-on-exec, so the child inherits only its three pipes.
    `cwd` needs subprocess (posix_spawn has no chdir before Python 3.13).
    """
    if cwd is not None:
        return _spawn_popen(cmd, args, env, cwd)
    fds = os.pipe() + os.pipe() + os.pipe()
    (in_r, in_w, out_r, out_w, err_r, err_w) = fds
    if min(fds) < 3:  # our own 0/1/2 are closed: dup2 onto them could clobber a source
        for fd in fds:
            os.close(fd)
        return _spawn_popen(cmd, args, env, cwd)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                   (os.POSIX_SPAWN_DUP2, err_w, 2)]
        with reaper.SPAWN_LOCK:
            pid = _spawn_path(cmd, [cmd, *args], env, actions)
            reaper.register(pid)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    unprotect(pid)
    os.close(in_r)
    os.close(out_w)
    os.close(err_w)
    return Child(pid, in_w, out_r, err_r)


def child_env(env_clear: bool, extra: dict) -> dict:
    """The environment of a child, as bytes: ours (unless env_clear), then `extra` on top."""
    if env_clear:
        full = {}
    else:
        # A C-level copy of the raw (bytes) environment: decoding and re-encoding
        # every variable through os.environ costs a visible fraction of a
        # millisecond per start inside a slow guest.
        raw = getattr(os.environ, "_data", None)
        if isinstance(raw, dict):
            full = dict(raw)
        else:
            full = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    for k, v in extra.items():
        full[os.fsencode(k)] = os.fsencode(v)
    return full


def _spawn_path(cmd: str, argv: list[str], env: dict, actions: list) -> int:
    if "/" in cmd:
        candidates = [cmd]
    else:
        # PATH of the child's environment, as execvpe(3) and subprocess use it.
        path = env.get(b"PATH")
        dirs = (os.fsdecode(path) if path is not None else os.defpath).split(os.pathsep)
        candidates = [f"{d}/{cmd}" if d and not d.endswith("/") else d + cmd for d in dirs]
    denied: OSError | None = None  # like execvp: EACCES wins over "not found"
    missing: OSError | None = None
    if len(candidates) > 1:
        # access() finds the entry without the cost of a failed spawn or of an
        # exception per missing PATH entry (both add up inside a slow guest).
        found = [p for p in candidates if os.access(p, os.F_OK)]
        if not found:
            missing = _lookup_error(candidates)
        candidates = found
    for path in candidates:
        try:
            return os.posix_spawn(path, argv, env, file_actions=actions, setpgroup=0,
                                  setsigdef=_sigdef())
        except (FileNotFoundError, NotADirectoryError) as exc:
            missing = exc
        except PermissionError as exc:  # remember it, try the rest of PATH
            denied = denied or exc
    err = denied or missing or FileNotFoundError(2, os.strerror(2))
    raise OSError(err.errno, err.strerror, cmd)


def _lookup_error(candidates: list[str]) -> OSError:
    """Why none of the PATH candidates exists: EACCES if a directory could not be searched."""
    for path in candidates:
        try:
            os.stat(path)
        except PermissionError as exc:
            return exc
        except (OSError, ValueError):
            pass
    return FileNotFoundError(2, os.strerror(2))


def _spawn_popen(cmd: str, args: list[str], env: dict, cwd: str | None) -> Child:
    import subprocess

    with reaper.SPAWN_LOCK:
        p = subprocess.Popen([cmd, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=cwd, process_group=0, close_fds=True)
        reaper.register(p.pid)
    unprotect(p.pid)
    fds = []
    for f in (p.stdin, p.stdout, p.stderr):
        assert f is not None  # all three are pipes
        fds.append(os.dup(f.fileno()))  # plain descriptors, like the posix_spawn path
        f.close()
    return Child(p.pid, fds[0], fds[1], fds[2], popen=p)


# ---- collecting output -------------------------------------------------------------


class OutputBuffer:
    """What one pipe produced, up to `cap` bytes (OUTPUT_CAP); `done` once we
    stopped reading it.  Bytes past the cap are counted and dropped (the pipe is
    still drained, so the writer never blocks), and `finish` ends the kept part
    with a marker saying how much was dropped.

    Kept as the list of chunks the pipe gave, never joined while it grows:
    appending is no copy, and a reader gets a view of an (immutable) chunk, no
    copy either, that stays valid whatever is appended meanwhile.  Inside a TCG
    guest every pass over a command's output shows: a single growing bytearray
    cost a copy in and a copy out per byte."""

    def __init__(self, name: str = "output", cap: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.starts: list[int] = []  # offset of each chunk in the output
        self.size = 0
        self.done = False
        self.cond = threading.Condition()
        self.name = name
        self.cap = OUTPUT_CAP if cap is None else cap
        self.dropped = 0

    def _add(self, chunk: bytes) -> None:
        self.starts.append(self.size)
        self.chunks.append(chunk)
        self.size += len(chunk)

    def append(self, chunk: bytes) -> None:
        with self.cond:
            room = self.cap - self.size
            if len(chunk) > room:
                self.dropped += len(chunk) - max(0, room)
                chunk = chunk[:max(0, room)]
            if chunk:
                self._add(bytes(chunk))  # no copy for bytes (what os.read gives)
                self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            if not self.done and self.dropped:
                self._add(output_marker(self.name, self.dropped))
            self.done = True
            self.cond.notify_all()

    def wait_past(self, pos: int, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.done or self.size > pos, timeout)

    def read(self, pos: int, limit: int) -> list:
        """Up to `limit` bytes from offset `pos` (empty when nothing is there
        yet), as views of the chunks holding them: no copy."""
        import bisect  # here: only a stream reads this way, not the agent's start

        with self.cond:
            if pos >= self.size or limit <= 0:
                return []
            chunks, starts = self.chunks, self.starts
            i = bisect.bisect_right(starts, pos) - 1
            out: list = []
            off = pos - starts[i]
            while limit > 0 and i < len(chunks):
                chunk = chunks[i]
                if off == 0 and len(chunk) <= limit:
                    out.append(chunk)
                    limit -= len(chunk)
                else:
                    piece = memoryview(chunk)[off:off + limit]
                    out.append(piece)
                    limit -= len(piece)
                off = 0
                i += 1
            return out

    def snapshot(self) -> bytes:
        with self.cond:
            chunks = self.chunks
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def value(self) -> bytes | Blob:
        """The whole output for a reply: bytes, or a Blob of the chunks (large
        output goes out from them, not joined first).  Call once collected."""
        with self.cond:
            if self.size < BLOB_MIN:
                return self.snapshot()
            return Blob(list(self.chunks))


def collect(child: Child, out: OutputBuffer, err: OutputBuffer, *, pidfd: int | None,
            feed: bytes | None = None, deadline: float | None = None, ctx=None) -> tuple[bool, bool, bool]:
    """Read stdout/stderr into `out`/`err` until they close, or until they went
    quiet for EXIT_GRACE after the child exited; with a `pidfd`, also until the
    child exited.  Returns (timed_out, killed, seen the exit).

    `feed`: bytes to write to stdin, which is then closed (exec); None leaves
    stdin to its owner (run_async).  At `deadline` while the child still runs,
    the whole group is killed (timed_out); a cancelled `ctx` kills it too.
    `pidfd` is polled for the exit (one loop for pipes and exit: each wake-up
    counts in a slow guest); the caller owns it.  Pipes still open at the end
    go to the sink; either way `out` and `err` end up `done`.
    """
    poller = select.poll()
    bufs = {child.stdout: out, child.stderr: err}
    sizes: dict[int, int] = {}  # read size per pipe, once grown (see BIG_CHUNK)
    for fd in bufs:
        poller.register(fd, _POLLIN)
    if pidfd is not None:
        poller.register(pidfd, _POLLIN)
    in_fd = None
    view = memoryview(feed or b"")
    if feed:
        in_fd = child.stdin
        os.set_blocking(in_fd, False)
        poller.register(in_fd, _POLLOUT)
    elif feed is not None:
        _close_stdin(child)
    exited_at = None
    last = 0.0
    timed_out = killed = False
    # A command that outlives its first slice gets the channel's cancel descriptor
    # in the poll set: from then on it waits for events only, with no periodic
    # wake-up to look at `ctx.cancelled`.  A short one never pays for making it.
    cancel_fd: int | None = None
    limit = deadline
    monotonic = time.monotonic
    try:
        while bufs or (pidfd is not None and exited_at is None):
            now = monotonic()
            if exited_at is None and pidfd is None and child.exited():
                exited_at = last = now
            if exited_at is not None:
                stop = min(last + EXIT_GRACE, exited_at + EXIT_GRACE_MAX)
                if now >= stop:
                    break  # a descendant holds the pipes: not ours to wait for
                timeout = stop - now
            else:
                if limit is not None and now >= limit:
                    if killed:
                        break  # SIGKILL did not end it (stuck in the kernel): stop listening
                    child.killpg()
                    killed = timed_out = True
                    limit = now + KILL_GRACE
                    continue
                if ctx is not None and ctx.cancelled and not killed:
                    child.killpg()  # nobody is left who could collect this process
                    killed = True
                    limit = now + KILL_GRACE
                timeout = -1.0 if (ctx is None or cancel_fd is not None) and pidfd is not None else SLICE
                if limit is not None:
                    timeout = limit - now if timeout < 0 else min(timeout, limit - now)
            events = poller.poll(-1 if timeout < 0 else int(timeout * 1000) + 1)
            if (not events and cancel_fd is None and pidfd is not None and exited_at is None
                    and getattr(ctx, "cancel_fd", None) is not None):
                cancel_fd = ctx.cancel_fd()
                poller.register(cancel_fd, _POLLIN)
            for fd, ev in events:
                if fd == cancel_fd:
                    poller.unregister(fd)  # level-triggered: seen once is enough
                    cancel_fd = -1  # (the loop's top acts on ctx.cancelled)
                    continue
                if fd == pidfd:
                    poller.unregister(fd)
                    exited_at = last = monotonic()
                    if in_fd is not None:  # nobody reads stdin any more
                        poller.unregister(in_fd)
                        in_fd = None
                        _close_stdin(child)
                    continue
                if fd == in_fd:
                    try:
                        view = view[os.write(fd, view[:CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:
                        view = view[:0]  # the child stopped reading; what it got is what it wanted
                    if not view:
                        poller.unregister(fd)
                        in_fd = None
                        _close_stdin(child)
                    continue
                buf = bufs.get(fd)
                if buf is None:
                    continue
                size = sizes.get(fd, CHUNK)
                if not ev & _POLLIN:
                    chunk = b""  # hung up with nothing left (data would add POLLIN): EOF without a read
                else:
                    try:
                        chunk = os.read(fd, size)
                    except OSError:
                        chunk = b""
                if chunk:
                    buf.append(chunk)
                    last = monotonic()
                    if len(chunk) == CHUNK and size == CHUNK:
                        sizes[fd] = _grow_pipe(fd)
                else:
                    poller.unregister(fd)
                    del bufs[fd]
                    os.close(fd)
                    buf.finish()
    finally:
        if in_fd is not None:
            _close_stdin(child)
        for fd, buf in bufs.items():
            buf.finish()
            SINK.adopt(fd)
    return timed_out, killed, exited_at is not None


def _grow_pipe(fd: int) -> int:
    """Grow a pipe that was found full; the read size to use for it from now on."""
    import fcntl  # builtin and small; only a chatty command gets here

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, BIG_CHUNK)
    except OSError:  # over pipe-max-size or the user's pipe quota: keep what it has
        return CHUNK
    return BIG_CHUNK


def _close_stdin(child: Child) -> None:
    fd, child.stdin = child.stdin, -1
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class _Sink:
    """Drains and drops what descendants still write into pipes nobody collects.

    One thread for all of them, started on first use; a pipe is closed once
    its last writer has gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: list[int] = []
        self._wake: int | None = None
        self.open = 0  # pipes still held by descendants (for tests and debugging)

    def adopt(self, fd: int) -> None:
        with self._lock:
            if self._wake is None:
                r, w = os.pipe()
                os.set_blocking(w, False)
                self._wake = w
                threading.Thread(target=self._run, args=(r,), daemon=True, name="pipe-sink").start()
            self._new.append(fd)
            self.open += 1
        try:
            os.write(self._wake, b"!")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def _run(self, wake: int) -> None:
        poller = select.poll()
        poller.register(wake, _POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == wake:
                    os.read(wake, 4096)
                    with self._lock:
                        new, self._new = self._new, []
                    for f in new:
                        poller.register(f, _POLLIN)
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    os.close(fd)
                    with self._lock:
                        self.open -= 1


SINK = _Sink()


# ---- leftover groups ---------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but we may not signal it


def kill_leftover_group(pgid: int) -> None:
    """SIGKILL what is left of a group whose leader we started.

    A group's number cannot be handed out again while the group has members.
    Once it is empty, a new process may get the number as its pid and lead a
    group of the same number: so when a process with that pid exists, the group
    is killed only if that process is still our own child leading it.
    """
    try:
        with open(f"/proc/{pgid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ours = int(fields[1]) == os.getpid() and int(fields[2]) == pgid
    except FileNotFoundError:
        ours = True  # leader gone: any member left is one of ours
    except (OSError, ValueError, IndexError):
        ours = False
    if ours:
        try:
            os.killpg(pgid, SIGKILL)
        except OSError:
            pass

"""Running test files: one runner subprocess per file, as many at once as the pool allows.

Everything happens on the calling thread: one selector watches every running
runner's event pipe and its pidfd (readable when the process exits), so there
is no polling delay between a runner finishing and the next one starting.
Runners are spawned from this one thread on purpose: the runner asks for
PR_SET_PDEATHSIG itself (so a killed provium takes its runners along), and
that signal fires when the *spawning thread* ends, so it must be one that
lives as long as the run.  (Setting it here with a preexec_fn would force a
full fork of this process for every file: measurably slower.)

Runners are forked by a zygote (runner/zygote.py, zygote_client.py) that did
the runner's imports once for the whole run; when it is off (`--no-zygote`,
PROVIUM_NO_ZYGOTE=1, a custom `runner_cmd`) or unusable, each runner is a new
`python -m provium.runner` process.  Both kinds behave the same from here on.

A runner is the leader of its own process group; the per-file watchdog kills
the whole group.  A runner that crashes (non-zero exit, signal, missing or bad
result file) fails its file with a chunk error; the run carries on.

Files start in discovery order (FIFO), each once its per-file overhead fits
the pool and the host is not under CPU/memory pressure (psi.py).  The same
selector serves the coordinator's socket (coordinator.py), through which the
runners take VM charges, claims and barriers from the one pool.  Time a file
spends parked in the pool is added to its kill deadline.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provium import log as logmod
from provium.events import types as ev
from provium.events.sinks import Sink
from provium.fsutil import printable, read_tail
from provium import runfiles
from provium.protocol import framing
from provium.protocol.decoder import FrameDecoder

from . import zygote_client
from .coordinator import Coordinator
from .declared import declared_claim
from .discovery import Discovered
from .pool import Pool, PoolRefused, PoolSize, fits, fmt_amount
from .psi import DEFAULT_PATHS, PressureGate
from .results import FileResult, ResultError, TestOutcome

log = logmod.ROOT.getChild("scheduler")
FAIL_FAST_REASON = "skipped: --fail-fast"
OUTPUT_TAIL = 64 * 1024  # bytes of runner stdout/stderr kept per file
POOL_STATE_INTERVAL = 1.0


def kill_grace(timeout: float) -> float:
    """How long past the file timeout before the runner is killed.

    The runner enforces the same timeout itself (it unwinds the running test,
    shuts its VMs down and reports what ran); the scheduler's kill is the
    backstop for a runner that cannot, so it waits a little longer.
    """
    return max(2.0, min(10.0, timeout * 0.1))

def default_runner_cmd() -> list[str]:
    return [sys.executable, "-m", "provium.runner"]


@dataclass
class DispatchOptions:
    settings_json: str  # RunSettings.to_json()
    work_dir: str  # scratch for settings/result/log files (the caller removes it)
    pool: PoolSize
    file_timeout: float | None = None  # seconds; None or 0 = no watchdog
    fail_fast: bool = False
    runner_cmd: list[str] = field(default_factory=default_runner_cmd)
    env: dict[str, str] | None = None
    # The runners' working directory (relative test paths are read from it); None: this process's.
    cwd: str | None = None
    kill_grace: float | None = None  # seconds past the timeout before the kill; None = kill_grace(timeout)
    psi_paths: tuple[str, ...] | list[str] = DEFAULT_PATHS  # PSI files to gate on (tests use fakes)
    psi_threshold: float = 10.0
    # Builds the coordinator (same signature as Coordinator); the Ray executor passes
    # one whose barriers span the cluster.
    coordinator_factory: Callable[..., Coordinator] | None = None
    # Runs one profile's `build` command when a runner first boots a VM of it
    # (coordinator.py); None: nothing is built (`--vmm local`, `--no-build`).
    build_profile: Callable[[str], None] | None = None
    # Fork runners from a zygote: None = yes unless PROVIUM_NO_ZYGOTE is set (in `env`, else
    # this process's environment) or `runner_cmd` is not the default runner.
    zygote: bool | None = None
    zygote_cmd: list[str] = field(default_factory=zygote_client.default_zygote_cmd)

    def use_zygote(self) -> bool:
        if self.zygote is not None:
            return self.zygote
        return self.runner_cmd == default_runner_cmd() and not zygote_client.disabled_by_env(self.env)


@dataclass
class _Running:
    index: int
    file: Discovered
    proc: subprocess.Popen | zygote_client.ForkedProc
    rfd: int
    pidfd: int | None  # spawned runners only: a forked one's exit is reported by the zygote
    log_path: str
    result_path: str
    started: float
    deadline: float | None
    frames: FrameDecoder = field(default_factory=FrameDecoder)
    # Tests seen on the event stream, so a killed runner still reports what ran.
    seen: dict[str, TestOutcome] = field(default_factory=dict)
    current: str | None = None
    timed_out: bool = False
    eof: bool = False


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _tail(path: str, limit: int = OUTPUT_TAIL) -> str:
    return read_tail(path, limit).decode("utf-8", "replace")


class Dispatcher:
    def __init__(self, sink: Sink, opts: DispatchOptions,
                 on_file_done: Callable[[int, FileResult], None] | None = None) -> None:
        self.sink = sink
        self.opts = opts
        self.on_file_done = on_file_done
        self._settings_path = os.path.join(opts.work_dir, "settings.json")
        Path(self._settings_path).write_text(opts.settings_json)
        self.pool = Pool(opts.pool.total)
        self._queue: deque[int] = deque()
        self._refusals: dict[str, str | None] = {}
        self._cleanup_dirs: list[str] = []
        self._running: dict[int, _Running] = {}  # by index
        self._sel = selectors.DefaultSelector()
        self._stop = False
        self.zygote: zygote_client.Zygote | None = None
        self.spawn_reason: str | None = None  # why runners are spawned, not forked (None: forked)

    # ---- public ------------------------------------------------------------

    def run(self, files: list[Discovered]) -> list[FileResult]:
        """Run every file; results come back in input order."""
        results: list[FileResult | None] = [None] * len(files)
        self._queue = deque(range(len(files)))
        blocked_sent: dict[int, str] = {}
        next_pool_state = 0.0
        per_file = self.opts.pool.per_file
        gate = PressureGate(self.opts.psi_paths, self.opts.psi_threshold)
        make = self.opts.coordinator_factory or Coordinator
        self.coordinator = make(self._socket_path(), self.pool, self._sel,
                                       live_files=lambda: len(self._running) + len(self._queue),
                                       charge_vms=self.opts.pool.charge_vms, build=self.opts.build_profile)
        self._write_settings()
        try:
            if files:
                self._start_zygote()
            while self._queue or self._running:
                gated = False
                while self._queue and not self._stop:
                    i = self._queue[0]
                    refused = self._refusal(files[i])
                    if refused is not None:
                        self._queue.popleft()
                        results[i] = self._refuse(i, files[i], refused)
                        continue
                    # Under pressure, hold new files back while a running one works;
                    # when every running file waits on the others, holding back is a deadlock.
                    if self._running and not self.coordinator.all_waiting(self._running) and gate.pressured():
                        gated = True
                        self._blocked(files, blocked_sent, "psi_pressure")
                        break
                    if not fits(per_file, self.pool.available):
                        self._blocked(files, blocked_sent, "pool_full")
                        break
                    self._queue.popleft()
                    self._start(i, files)
                if self._stop:
                    while self._queue:
                        i = self._queue.popleft()
                        results[i] = FileResult(path=files[i].path, not_run=FAIL_FAST_REASON,
                                                chunk_error=None)
                now = time.monotonic()
                if now >= next_pool_state:
                    self._emit_pool_state()
                    next_pool_state = now + POOL_STATE_INTERVAL
                if not self._running:
                    continue
                wait = next_pool_state - now
                if gated:
                    wait = min(wait, 0.2)
                for r in self._running.values():
                    dl = self._deadline(r, now)
                    if dl is not None:
                        wait = min(wait, dl - now)
                cd = self.coordinator.next_deadline()
                if cd is not None:
                    wait = min(wait, cd - now)
                for key, mask in self._sel.select(max(0.0, wait)):
                    kind, obj = key.data
                    if kind == "events":
                        self._read_events(obj)
                    elif kind == "zygote":
                        self._zygote_ready()
                    elif kind.startswith("coord"):
                        self.coordinator.on_ready(kind, obj, mask)
                now = time.monotonic()
                self.coordinator.tick(now)
                for r in list(self._running.values()):
                    if r.proc.poll() is not None:
                        results[r.index] = self._finish(r)
                    else:
                        dl = self._deadline(r, now)
                        if dl is not None and now >= dl:
                            r.timed_out = True
                            self._kill(r)
                            results[r.index] = self._finish(r)
            self._emit_pool_state()
        finally:
            for r in list(self._running.values()):
                self._kill(r)
                self._close(r)
            self.coordinator.close()
            if self.zygote is not None:
                self.zygote.close()
            self._sel.close()
            for d in self._cleanup_dirs:
                shutil.rmtree(d, ignore_errors=True)
        return [r for r in results if r is not None]

    def kill_running(self) -> None:
        """SIGKILL every running runner (with its process group: its VMs go too).  Safe
        from another thread: `run` then finishes those files as crashed."""
        for r in list(self._running.values()):
            try:
                os.killpg(r.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _socket_path(self) -> str:
        """The coordinator's socket: in the work dir, unless that path is too long
        for a unix socket (108 bytes), then in a private directory under /tmp."""
        path = os.path.join(self.opts.work_dir, "coord.sock")
        if len(os.fsencode(path)) < 100:
            return path
        # Named like a run's own temp entries, so a run killed with SIGKILL leaves nothing
        # the next run does not sweep.
        runfiles.sweep_stale("/tmp")
        short = tempfile.mkdtemp(prefix=f"{runfiles.RUN_PREFIX}{os.getpid()}-coord-", dir="/tmp")
        self._cleanup_dirs.append(short)
        return os.path.join(short, "coord.sock")

    def _write_settings(self) -> None:
        """The runners' settings, plus where to reach the coordinator."""
        try:
            data = json.loads(self.opts.settings_json)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data["coordinator"] = self.coordinator.path
            Path(self._settings_path).write_text(json.dumps(data, sort_keys=True))

    def _deadline(self, r: _Running, now: float) -> float | None:
        """The kill deadline, moved back by the time the file waited in the pool."""
        if r.deadline is None:
            return None
        return r.deadline + self.coordinator.waited(r.index, now)

    def _blocked(self, files: list[Discovered], sent: dict[int, str], reason: str) -> None:
        for i in self._queue:
            if sent.get(i) != reason:
                sent[i] = reason
                self.sink.emit(ev.FileBlocked(path=printable(files[i].path), waiting_for=self.opts.pool.per_file,
                                              reason=reason))

    def _refusal(self, f: Discovered) -> str | None:
        """Why this file can never run in this pool (decided before it starts), or None."""
        if f.path not in self._refusals:  # the head of a blocked queue is asked again and again
            self._refusals[f.path] = self._find_refusal(f)
        return self._refusals[f.path]

    def _find_refusal(self, f: Discovered) -> str | None:
        total = self.pool.total
        if not fits(self.opts.pool.per_file, total):
            return (f"the per-file overhead ({fmt_amount(self.opts.pool.per_file)}) exceeds the pool total "
                    f"({fmt_amount(total)}); raise --mem/--cpus")
        claim = declared_claim(f.path)
        if claim is not None and not fits(claim, total):
            return (f"this file claims {fmt_amount(claim)} (provium:claim), which exceeds the pool total "
                    f"({fmt_amount(total)}); it could never run. Raise --mem/--cpus/--cpu-overcommit, "
                    "or claim less")
        return None

    def _refuse(self, index: int, f: Discovered, why: str) -> FileResult:
        result = FileResult(path=f.path, chunk_error=why)
        self.sink.emit(ev.FileCompleted(path=printable(f.path), status=result.status, duration_ns=0))
        if self.opts.fail_fast:
            self._stop = True
        if self.on_file_done is not None:
            self.on_file_done(index, result)
        return result

    # ---- one runner ---------------------------------------------------------

    # ---- the zygote ------------------------------------------------------------

    def _start_zygote(self) -> None:
        """Start the zygote now, so its imports overlap the dispatcher's own start."""
        if not self.opts.use_zygote():
            self.spawn_reason = "the zygote is turned off"
            log.debug("runners are spawned: the zygote is turned off (--no-zygote / %s)", zygote_client.ENV_OFF)
            return
        why = zygote_client.fork_unsupported()
        if why is not None:
            self._spawn_instead(why)
            return
        # The CLI's early zygote has this process's environment; the runners get `env` either way.
        self.zygote = (zygote_client.adopt(self.opts.zygote_cmd)
                       or zygote_client.Zygote(self.opts.zygote_cmd, self.opts.env))
        if self.zygote.unavailable:
            self._spawn_instead(self.zygote.unavailable)
            return
        self._sel.register(self.zygote.fileno(), selectors.EVENT_READ, ("zygote", None))

    def _spawn_instead(self, why: str) -> None:
        """From now on, spawn runners; say so once, on stderr (it is not a test's output)."""
        if self.spawn_reason is None:
            self.spawn_reason = why
            print(f"provium: {why}; starting a new runner process for each file instead", file=sys.stderr)
        if self.zygote is not None:
            try:
                self._sel.unregister(self.zygote.fileno())
            except (KeyError, ValueError):
                pass

    def _zygote_ready(self) -> None:
        """The zygote's socket is readable: exit reports (read by the runners' poll), or its death."""
        z = self.zygote
        if z is None:
            return
        z.pump()
        if z.dead:
            self._spawn_instead(z.unavailable or f"the runner zygote died ({z.dead})")

    def _fork(self, args: list[str], wfd: int, log_path: str) -> zygote_client.ForkedProc | None:
        z = self.zygote
        if z is None or self.spawn_reason is not None:
            return None
        with open(log_path, "wb") as log_file:
            proc = z.fork(args, wfd, log_file.fileno(), env=self.opts.env, cwd=self.opts.cwd)
        if proc is None:
            self._spawn_instead(z.unavailable or "the runner zygote is unavailable")
        return proc

    # ---- one runner ---------------------------------------------------------

    def _start(self, index: int, files: list[Discovered]) -> None:
        f = files[index]
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        log_path = os.path.join(self.opts.work_dir, f"{index}.log")
        result_path = os.path.join(self.opts.work_dir, f"{index}.result.json")
        args = ["--settings", self._settings_path, "--result", result_path, "--owner", str(index), f.path]
        cmd = [*self.opts.runner_cmd, *args[:-1], "--events-fd", str(wfd), f.path]
        try:
            self.pool.request(self.pool.new_request(index, [self.opts.pool.per_file], "the file overhead"))
        except PoolRefused:  # cannot happen: the caller checked that it fits
            pass
        self.coordinator.file_started(index)
        self.sink.emit(ev.FileDispatched(path=printable(f.path), reservation=self.opts.pool.per_file))
        started = time.monotonic()
        proc: subprocess.Popen | zygote_client.ForkedProc | None = None
        pidfd: int | None = None
        if self.zygote is not None:
            proc = self._fork([*args[:-1], "--events-fd", str(zygote_client.EVENTS_FD), f.path], wfd, log_path)
        if proc is None:
            with open(log_path, "wb") as log_file:
                try:
                    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                            pass_fds=(wfd,), start_new_session=True, env=self.opts.env,
                                            cwd=self.opts.cwd)
                except OSError as exc:
                    os.close(rfd)
                    os.close(wfd)
                    self.coordinator.file_ended(index)
                    raise OSError(exc.errno, f"cannot start the runner `{cmd[0]}`: {exc.strerror}") from exc
            pidfd = os.pidfd_open(proc.pid)
        os.close(wfd)
        t = self.opts.file_timeout
        r = _Running(index=index, file=f, proc=proc, rfd=rfd, pidfd=pidfd, log_path=log_path,
                     result_path=result_path, started=started,
                     deadline=started + t + self._grace(t) if t else None)
        self._sel.register(rfd, selectors.EVENT_READ, ("events", r))
        if pidfd is not None:
            self._sel.register(pidfd, selectors.EVENT_READ, ("exit", r))
        self._running[index] = r

    def _grace(self, t: float) -> float:
        return kill_grace(t) if self.opts.kill_grace is None else self.opts.kill_grace

    def _read_events(self, r: _Running) -> None:
        while not r.eof:
            try:
                chunk = os.read(r.rfd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                # The runner closed its end (it is exiting); stop watching the pipe,
                # or the selector would report it readable in a tight loop.
                r.eof = True
                self._sel.unregister(r.rfd)
                break
            r.frames.feed(chunk)
        self._parse_frames(r)

    def _parse_frames(self, r: _Running) -> None:
        while True:
            try:
                body = r.frames.next()
            except framing.FrameTooLarge as exc:
                self._warn(r, f"event frame of {exc.length} bytes exceeds the cap; skipped it")
                continue
            if body is None:
                return
            try:
                frame = ev.EventFrame.decode(body)
            except (ev.EventDecodeError, framing.FrameError) as exc:
                self._warn(r, f"dropped an invalid event: {exc}")
                continue
            self._track(r, frame)
            self.sink.emit_frame(frame)

    def _track(self, r: _Running, frame: ev.EventFrame) -> None:
        p = frame.payload
        if isinstance(p, ev.TestStarted):
            r.current = p.name
        elif isinstance(p, (ev.TestPassed, ev.TestFailed, ev.TestSkipped)):
            status = {"test_passed": "passed", "test_failed": "failed", "test_skipped": "skipped"}[frame.kind]
            msg = getattr(p, "reason", None) if status != "passed" else None
            r.seen[p.name] = TestOutcome(name=p.name, status=status, message=msg or None,
                                         duration_ns=getattr(p, "duration_ns", 0), meta=dict(p.meta))
            if r.current == p.name:
                r.current = None

    def _kill(self, r: _Running) -> None:
        try:
            os.killpg(r.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            r.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # A killed runner cannot remove its QEMU scratch dir (sockets, console log).
        from provium.vmm.qemu.backend import remove_scratch_of

        remove_scratch_of(r.proc.pid)

    def _close(self, r: _Running) -> None:
        for fd in (r.rfd, r.pidfd):
            if fd is None:
                continue
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError):
                pass
            os.close(fd)
        self._running.pop(r.index, None)

    def _finish(self, r: _Running) -> FileResult:
        r.proc.wait()
        # Whatever the runner wrote before exiting is already in the pipe.
        self._read_events(r)
        try:
            r.frames.eof()
        except framing.UnexpectedEof as exc:
            self._warn(r, f"event stream ended mid-frame ({exc.bytes_read} of {exc.expected} bytes; dropped)")
        except framing.CleanEof:
            pass
        self._close(r)
        self.coordinator.file_ended(r.index)  # gives back all the file held
        duration_ns = int((time.monotonic() - r.started) * 1e9)
        output = _tail(r.log_path)
        result = self._outcome(r, output)
        result.duration_ns = duration_ns
        result.output = output
        self.sink.emit(ev.FileCompleted(path=printable(r.file.path), status=result.status, duration_ns=duration_ns))
        if self.opts.fail_fast and not result.passed:
            self._stop = True
        if self.on_file_done is not None:
            self.on_file_done(r.index, result)
        return result

    def _outcome(self, r: _Running, output: str) -> FileResult:
        path = r.file.path
        if r.timed_out:
            tests = list(r.seen.values())
            if r.current is not None and r.current not in r.seen:
                tests.append(TestOutcome(name=r.current, status="timed_out",
                                         message=f"file timeout ({self.opts.file_timeout:g}s) exceeded while this test ran"))
            return FileResult(path=path, tests=tests, timed_out=True)
        code = r.proc.returncode if r.proc.returncode is not None else 0  # set: `_finish` waited
        why = None
        note = getattr(r.proc, "note", None)  # a forked runner whose zygote died
        if note:
            why = f"runner killed: {note}"
        elif code < 0:
            why = f"runner killed by {_signal_name(-code)}"
        elif code != 0:
            why = f"runner exited with status {code}"
        else:
            try:
                return FileResult.load(r.result_path, path)
            except FileNotFoundError:
                why = "runner exited without writing a result"
            except (ResultError, OSError, ValueError) as exc:
                why = f"runner wrote an unusable result ({exc})"
        detail = output.strip()
        if len(detail) > 2000:
            detail = "…" + detail[-2000:]
        msg = f"crashed: {why}" + (f"\n{detail}" if detail else "")
        return FileResult(path=path, tests=list(r.seen.values()), chunk_error=msg, crashed=True)

    def _emit_pool_state(self) -> None:
        self.sink.emit(ev.PoolState(used=self.pool.used, available=self.pool.available))

    def _warn(self, r: _Running, msg: str) -> None:
        print(f"provium: {r.file.path}: {msg}", file=sys.stderr)

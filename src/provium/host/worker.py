"""A worker: a separate agent process in the guest with its own credentials.

Ops travel to the VM's agent, which relays them to the worker process.  Files
opened through a worker are opened by it (its permissions) and handed to the
agent, so they are ordinary Files of the VM.  After `join()` the worker, its
processes and its files are gone and every further op is refused here, before
any wire traffic.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.messages import (
    OpenFileArgs,
    WorkerExecArgs,
    WorkerJoinArgs,
    WorkerKillArgs,
    WorkerOpenFileArgs,
    WorkerRunAsyncArgs,
    WorkerSyscallArgs,
    WorkerSyscallAwaitArgs,
    WorkerSyscallBeginArgs,
)
from .pynames import python_names
from .errors import HandleError
from .execargs import build_command
from .file import File, parse_open_mode
from .options import merge_kw, path_arg
from .process import Process
from .results import RunResult, SyscallOutcome
from .syscalls import PendingSyscall, build_syscall, outcome
from .values import duration_ms, parse_duration, parse_signal

CLOSE_WAIT = 2.0  # seconds close() gives the worker's processes after SIGTERM

if TYPE_CHECKING:
    from .vm import VM


@python_names
class Worker:
    def __init__(self, vm: "VM", handle: int) -> None:
        self._vm = vm
        self._handle = handle
        self._joined = False
        self._generation = vm.generation
        self._files: list[File] = []
        self._procs: "weakref.WeakSet[Process]" = weakref.WeakSet()

    def handle(self) -> int:
        return self._handle

    @property
    def joined(self) -> bool:
        return self._joined

    def _live(self, op: str) -> int:
        if self._joined:
            raise HandleError(f"worker:{op}: worker #{self._handle} was already joined "
                              "(a joined worker is gone; spawn a new one)")
        self._vm._check_generation(self._generation, f"worker #{self._handle}")
        return self._handle

    def run(self, cmd: Any, opts: Mapping | None = None, **kw: Any) -> RunResult:
        """Like `vm.run`, inside the worker (its credentials); `timeout` is honoured."""
        h = self._live("run")
        c = build_command("worker:run", cmd, merge_kw(opts, kw, "worker:run"))
        res = self._vm._agent("worker_exec", WorkerExecArgs(h, c.exec_args()))
        return RunResult.from_exec(self._vm._unwrap(f"worker:run `{c.cmd}`", res))

    def run_async(self, cmd: Any, opts: Mapping | None = None, **kw: Any) -> Process:
        h = self._live("run_async")
        c = build_command("worker:run_async", cmd, merge_kw(opts, kw, "worker:run_async"), async_=True)
        res = self._vm._agent("worker_run_async", WorkerRunAsyncArgs(h, c.run_async_args()))
        proc = Process(self._vm, self._vm._unwrap(f"worker:run_async `{c.cmd}`", res), owner="worker")
        self._procs.add(proc)
        if c.stdin is not None:
            proc.stdin_write(c.stdin)
            proc.close_stdin()
        return proc

    def open_file(self, path: Any, mode: Any) -> File:
        """Like `vm.open_file`, but the worker opens the file, so the permission
        check is the worker's (uid, gid, groups).  The File is an ordinary one
        of the VM (counted by `open_file_count`); joining the worker closes it."""
        p = path_arg(path, "worker:open_file")
        flags, perm = parse_open_mode(mode, "worker:open_file")
        h = self._live("open_file")
        meta = self._vm._meta("worker_open_file", f'"{p}"')
        res = self._vm._agent("worker_open_file", WorkerOpenFileArgs(h, OpenFileArgs(p, flags, perm)))
        handle = self._vm._unwrap(f"worker:open_file `{p}`", res)
        self._vm._registry.add_file(handle, meta)
        f = File(self._vm, handle, p)
        self._files.append(f)
        return f

    def syscall(self, nr: Any, *args: Any) -> SyscallOutcome:
        h = self._live("syscall")
        op = build_syscall("worker:syscall", nr, args)
        return outcome(self._vm._agent("worker_syscall", WorkerSyscallArgs(h, op)))

    def syscall_async(self, nr: Any, *args: Any) -> PendingSyscall:
        """Start a syscall in the worker (it runs on the worker's own thread);
        `.await_()` collects it."""
        h = self._live("syscall_async")
        op = build_syscall("worker:syscall_async", nr, args)
        async_id = self._vm._unwrap("worker:syscall_async",
                                    self._vm._agent("worker_syscall_begin", WorkerSyscallBeginArgs(h, op)))

        def collect() -> SyscallOutcome:
            self._live("syscall_async await")
            return outcome(self._vm._agent("worker_syscall_await", WorkerSyscallAwaitArgs(h, async_id)))

        return PendingSyscall("worker:syscall_async", collect)

    def kill(self, sig: Any = None) -> int:
        """Send `sig` (default SIGTERM) to every process this worker started
        that was not waited on yet; they stay waitable.  How many were signalled."""
        num = parse_signal(sig, "worker:kill")
        h = self._live("kill")
        return self._vm._unwrap("worker:kill", self._vm._agent("worker_kill", WorkerKillArgs(h, num)))

    def join(self, timeout: Any = None) -> int:
        """Wait for the worker's processes (kill them first to end them sooner;
        with `timeout` they are SIGKILLed when it expires), close the files it
        opened and end the worker.  Returns the worst exit status (128 + N for
        signal N; 0 when all ended cleanly or none ran).  Terminal."""
        t = parse_duration(timeout, "worker:join timeout", allow_none=True)
        h = self._live("join")
        op = WorkerJoinArgs(h, None if t is None else max(1, duration_ms(t)))
        try:
            res = self._vm._agent("worker_join", op)
        finally:
            self._drop_files()
        self._joined = True
        return self._vm._unwrap("worker:join", res).exit_status

    def _drop_files(self) -> None:
        """The agent closes a worker's files when it is joined: forget them here too."""
        files, self._files = self._files, []
        for f in files:
            f._forget()
        for p in list(self._procs):
            p._reaped(f"worker:join of worker #{self._handle}")
        self._procs = weakref.WeakSet()

    def close(self) -> None:
        """SIGTERM to its processes, join (SIGKILL after 2 s); never raises."""
        if self._joined:
            return
        try:
            if self._vm.state == "booted" and self._generation == self._vm.generation:
                try:
                    self.kill()
                except Exception:
                    pass
                self.join(CLOSE_WAIT)
        except Exception:
            pass
        self._drop_files()
        self._joined = True

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"worker(worker#{self._handle}{', joined' if self._joined else ''})"

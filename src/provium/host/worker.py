"""A worker: a separate agent process in the guest with its own credentials.

Ops travel to the VM's agent, which relays them to the worker process.  After
`join()` the worker is gone and every further op is refused here, before any
wire traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.messages import (
    WorkerExecArgs,
    WorkerJoinArgs,
    WorkerKillArgs,
    WorkerRunAsyncArgs,
    WorkerSyscallArgs,
    WorkerSyscallAwaitArgs,
    WorkerSyscallBeginArgs,
)
from .errors import HandleError, VmError
from .execargs import build_command
from .options import merge_kw
from .process import Process
from .results import RunResult, SyscallOutcome
from .syscalls import PendingSyscall, build_syscall, outcome
from .values import parse_signal

if TYPE_CHECKING:
    from .vm import VM


class Worker:
    def __init__(self, vm: "VM", handle: int) -> None:
        self._vm = vm
        self._handle = handle
        self._joined = False
        self._generation = vm.generation

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
        if c.stdin is not None:
            proc.stdin_write(c.stdin)
            proc.close_stdin()
        return proc

    def open_file(self, path: Any, mode: Any = None):
        raise VmError(
            f'worker:open_file("{path}"): not supported for a process-isolated worker (its file table is not '
            "the parent agent's); open it inside the worker with worker:syscall(openat, …), or use "
            f"vm:open_file on vm `{self._vm.name}` when the worker's credentials do not matter"
        )

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

    def kill(self, sig: Any = None) -> None:
        """Signal the worker process itself (default SIGTERM)."""
        num = parse_signal(sig, "worker:kill")
        h = self._live("kill")
        self._vm._unwrap("worker:kill", self._vm._agent("worker_kill", WorkerKillArgs(h, num)))

    def join(self) -> int:
        """End the worker and return its exit status.  Terminal."""
        h = self._live("join")
        res = self._vm._agent("worker_join", WorkerJoinArgs(h))
        self._joined = True
        return self._vm._unwrap("worker:join", res).exit_status

    def close(self) -> None:
        """SIGTERM + join, never raises."""
        if self._joined:
            return
        try:
            if self._vm.state == "booted" and self._generation == self._vm.generation:
                try:
                    self.kill()
                except Exception:
                    pass
                self.join()
        except Exception:
            pass
        self._joined = True

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"worker(worker#{self._handle}{', joined' if self._joined else ''})"

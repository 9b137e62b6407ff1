"""A guest process started with `run_async` (by the VM's agent or a worker)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ..protocol.messages import (
    GetPidArgs,
    KillArgs,
    ProcStatusArgs,
    ProcStdinCloseArgs,
    ProcStdinWriteArgs,
    ProcStreamArgs,
    WaitArgs,
)
from ..protocol.types import ProcessLiveStatus, ProcStreamChannel
from .pynames import python_names
from .errors import ArgumentError, GuestOsError, HandleError
from .execargs import to_bytes
from .results import RunResult
from .values import duration_ms, parse_duration, parse_signal

if TYPE_CHECKING:
    from .streams import Tail
    from .vm import VM

CLOSE_WAIT_MS = 2000


@python_names
class Process:
    """Handle of a running guest process.

    `wait()` is one-shot: the agent frees the process once it has answered, so
    a second wait is refused (capture the RunResult).  Dropping a Process that
    was never waited sends SIGTERM and reaps it in the background.
    """

    def __init__(self, vm: "VM", handle: int, *, owner: str = "proc") -> None:
        self._vm = vm
        self._handle = handle
        self._owner = owner
        self._consumed = False
        self._reaped_by: str | None = None
        self._generation = vm.generation
        self._guard = weakref.finalize(self, _drop_guard, vm, handle, vm.generation)

    def handle(self) -> int:
        return self._handle

    def _agent(self, kind: str, op) -> Any:
        self._vm._check_generation(self._generation, f"process proc#{self._handle}")
        return self._vm._agent(kind, op)

    def wait(self, timeout: Any = None) -> RunResult:
        """Wait for exit.  With a timeout the agent kills the process group when
        it expires and the result has status "timed_out"."""
        t = parse_duration(timeout, "proc:wait timeout", allow_none=True)
        if t == 0:
            raise ArgumentError("proc:wait: timeout=0 would SIGKILL the process immediately. Use proc:status() "
                                'to poll, or pass a small positive timeout (e.g. "100ms").')
        if self._reaped_by is not None:
            raise HandleError(f"proc:wait: proc#{self._handle} was reaped by {self._reaped_by}; its status went "
                              "into the join's result (wait for it before joining to see its own)")
        if self._consumed:
            raise GuestOsError(f"proc:wait: handle {self._handle} already waited on "
                               "(proc:wait is one-shot — capture the result)", errno=9)
        op = WaitArgs(self._handle, None if t is None else duration_ms(t))
        try:
            res = self._agent("wait", op)
        except GuestOsError:
            self._mark_consumed()
            raise
        self._mark_consumed()
        return RunResult.from_exec(self._vm._unwrap("proc:wait", res))

    def _reaped(self, by: str) -> None:
        """Its worker's join reaped it (if nobody waited for it before)."""
        if not self._consumed:
            self._reaped_by = by
            self._mark_consumed()

    def _mark_consumed(self) -> None:
        self._consumed = True
        self._guard.detach()

    @property
    def consumed(self) -> bool:
        return self._consumed

    def kill(self, sig: Any = None) -> None:
        """Send a signal (default SIGTERM).  A no-op once the process was waited on."""
        num = parse_signal(sig, "kill")
        if self._consumed:
            return
        self._vm._unwrap("proc:kill", self._agent("kill", KillArgs(self._handle, num)))

    def signal(self, sig: Any) -> None:
        num = parse_signal(sig, "proc:signal", required=True)
        if self._consumed:
            return
        self._vm._unwrap("proc:signal", self._agent("kill", KillArgs(self._handle, num)))

    def pid(self) -> int:
        """The guest kernel's PID of the process (a round trip)."""
        return self._vm._unwrap("proc:pid", self._agent("get_pid", GetPidArgs(self._handle)))

    def status(self) -> str:
        """"running" or "exited" (a process already waited on reports "exited")."""
        if self._consumed:
            return "exited"
        st = self._vm._unwrap("proc:status", self._agent("proc_status", ProcStatusArgs(self._handle)))
        return "running" if st == ProcessLiveStatus.RUNNING else "exited"

    def stdin_write(self, data: Any) -> int:
        buf = to_bytes(data, "proc:stdin_write", "data")
        res = self._agent("proc_stdin_write", ProcStdinWriteArgs(self._handle, buf))
        return self._vm._unwrap("proc:stdin_write", res).written

    write = stdin_write

    def close_stdin(self) -> None:
        self._vm._unwrap("proc:close_stdin", self._agent("proc_stdin_close", ProcStdinCloseArgs(self._handle)))

    def stdout_stream(self) -> "Tail":
        return self._stream(ProcStreamChannel.STDOUT)

    def stderr_stream(self) -> "Tail":
        return self._stream(ProcStreamChannel.STDERR)

    stdout = stdout_stream
    stderr = stderr_stream

    def _stream(self, channel: ProcStreamChannel) -> "Tail":
        self._vm._check_generation(self._generation, f"process proc#{self._handle}")
        kind = f"proc_{channel.value}_stream"
        return self._vm._open_stream(kind, str(self._handle), ProcStreamArgs(self._handle, channel),
                                     f"proc:{channel.value}_stream")

    def close(self) -> None:
        """SIGTERM and reap (2 s, then the agent SIGKILLs) unless already waited.
        Never raises."""
        if self._consumed:
            return
        try:
            if self._vm.state == "booted" and self._generation == self._vm.generation:
                try:
                    self._agent("kill", KillArgs(self._handle, 15))
                except Exception:
                    pass
                self._agent("wait", WaitArgs(self._handle, CLOSE_WAIT_MS))
        except Exception:
            pass
        self._mark_consumed()

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"process(proc#{self._handle})"


def _drop_guard(vm: "VM", handle: int, generation: int) -> None:
    """Best effort, never blocks: runs from the garbage collector."""
    if vm.state != "booted" or vm.generation != generation:
        return
    vm._session.call_soon(vm._background_reap, handle)

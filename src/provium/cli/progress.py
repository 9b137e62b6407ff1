"""The live progress bar: a `rich` bar driven by the event stream.

It is just another event consumer: the bar counts files done; next to it
are the files running and waiting for the pool (or for host pressure to
drop), VMs up (spawned minus shut down) and tests finished.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from provium.events import types as ev


class ProgressBar:
    def __init__(self, console: Console, total: int) -> None:
        self.vms = 0
        self.tests = 0
        self.running: set[str | None] = set()
        self.waiting: set[str | None] = set()
        self.progress = Progress(
            SpinnerColumn(), TimeElapsedColumn(), BarColumn(), MofNCompleteColumn(),
            TextColumn("files · {task.fields[msg]}"),
            console=console, transient=True,
        )
        self.task = self.progress.add_task("run", total=total, msg="starting")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_event(self, frame: ev.EventFrame) -> None:
        k = frame.kind
        path = getattr(frame.payload, "path", None)
        if k == "vm_spawned":
            self.vms += 1
        elif k == "vm_shutdown":
            self.vms = max(0, self.vms - 1)
        elif k in ("test_passed", "test_failed", "test_skipped"):
            self.tests += 1
        elif k == "file_blocked":
            self.waiting.add(path)
        elif k == "file_dispatched":
            self.waiting.discard(path)
            self.running.add(path)
        elif k == "file_completed":
            self.waiting.discard(path)
            self.running.discard(path)
            self.progress.advance(self.task)
        else:
            return
        self.progress.update(self.task, msg=self.message())

    def message(self) -> str:
        """`2 running · 3 waiting · 4 vms · 10 tests` (done files are the bar's count)."""
        parts = [f"{len(self.running)} running"]
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting")
        if self.tests == 0:
            parts.append(f"booting · {self.vms} vms" if self.vms else "booting")
        else:
            parts.append(f"{self.vms} vms · {self.tests} tests")
        return " · ".join(parts)

    def print(self, *args) -> None:
        """Print above the bar."""
        self.progress.console.print(*args)

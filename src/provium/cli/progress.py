"""The live progress bar: a `rich` bar driven by the event stream.

It is just another event consumer: it counts files completed, VMs up
(spawned minus shut down) and tests finished, and shows them next to the bar.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from provium.events import types as ev


class ProgressBar:
    def __init__(self, console: Console, total: int) -> None:
        self.vms = 0
        self.tests = 0
        self.progress = Progress(
            SpinnerColumn(), TimeElapsedColumn(), BarColumn(), MofNCompleteColumn(),
            TextColumn("files · {task.fields[msg]}"),
            console=console, transient=True,
        )
        self.task = self.progress.add_task("run", total=total, msg="starting")

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_event(self, frame: ev.EventFrame) -> None:
        k = frame.kind
        if k == "vm_spawned":
            self.vms += 1
        elif k == "vm_shutdown":
            self.vms = max(0, self.vms - 1)
        elif k in ("test_passed", "test_failed", "test_skipped"):
            self.tests += 1
        elif k == "file_completed":
            self.progress.advance(self.task)
        else:
            return
        if self.tests == 0:
            msg = f"booting · {self.vms} vms" if self.vms else "booting"
        else:
            msg = f"{self.vms} vms · {self.tests} tests"
        self.progress.update(self.task, msg=msg)

    def print(self, *args) -> None:
        """Print above the bar."""
        self.progress.console.print(*args)

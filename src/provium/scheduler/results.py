"""What one test file produced, as the scheduler saw it.

The runner's FileOutcome (tests, chunk error, duration, its own timeout; parsed
and validated by `FileResult.load`) plus what only the dispatcher knows: whether
the runner crashed, whether the file was never run (`--fail-fast`), and the tail
of the runner's output.  Reporters (human, JSON lines, JUnit) read only these types.
"""

from __future__ import annotations

from dataclasses import dataclass

from provium.runner.outcome import FileOutcome, ResultError, TestOutcome

__all__ = ["FileResult", "ResultError", "TestOutcome"]


@dataclass
class FileResult(FileOutcome):
    crashed: bool = False  # the runner died or wrote no usable result
    not_run: str | None = None  # why it never ran (e.g. "skipped: --fail-fast")
    output: str = ""  # the tail of the runner's stdout/stderr (Lua print, warnings)
    node: str | None = None  # the Ray node that ran the file (`--executor ray`), else None

    @property
    def errored(self) -> bool:
        """A chunk error (incl. a crash) or a timeout: the file itself went wrong."""
        return self.chunk_error is not None or self.timed_out

    @property
    def passed(self) -> bool:
        return self.not_run is None and self.all_succeeded()

    @property
    def status(self) -> str:
        """The `file_completed` status."""
        if self.timed_out:
            return "timed_out"
        if self.chunk_error is not None:
            return "crashed"
        return "passed" if self.passed else "failed"

"""Evidence of a failing file, kept after the run: one artifacts directory per run.

The CLI names `$TMPDIR/provium-artifacts-<pid>-<ns>/` and hands its path to
the runners (`PROVIUM_ARTIFACTS`).  Each runner gives its file a subdirectory
(`PROVIUM_ARTIFACTS_DIR`), and each QEMU guest copies its evidence there when it
is torn down, just before its scratch directory is removed:

    <run dir>/<file, slashes as __>/<vm name>-vm<cid>/
        console.log   qmp.log   qemu.argv   qemu.stderr

When the run ends, the directories of files that passed are deleted (all of
them with `--keep-artifacts never`, none with `always`), and if anything is
left the CLI prints the run directory's path.  Copying a few small files per
VM costs next to nothing; deciding at the end needs no guess about which file
will fail.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

ENV_ROOT = "PROVIUM_ARTIFACTS"  # the run's directory (set by the CLI for its runners)
ENV_FILE = "PROVIUM_ARTIFACTS_DIR"  # this runner's file's directory (set by the runner)
PREFIX = "provium-artifacts-"
EVIDENCE = ("console.log", "qmp.log", "qemu.argv", "qemu.stderr")
MODES = ("on-failure", "always", "never")


def file_slug(path: str) -> str:
    """A directory name for a test file: its path with separators as `__`."""
    text = os.path.normpath(path).lstrip("/").replace(os.sep, "__")
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "file"


def enter_file(path: str) -> None:
    """In a runner: give this file its directory under the run's, if the run keeps any."""
    root = os.environ.get(ENV_ROOT)
    if root:
        os.environ[ENV_FILE] = os.path.join(root, file_slug(path))


def keep_vm_evidence(scratch: Path, label: str) -> Path | None:
    """Copy a guest's evidence files out of its scratch directory (before it is removed)."""
    dest_root = os.environ.get(ENV_FILE)
    if not dest_root:
        return None
    dest = Path(dest_root) / re.sub(r"[^A-Za-z0-9._-]", "_", label)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in EVIDENCE:
            src = scratch / name
            if src.is_file():
                shutil.copyfile(src, dest / name)
    except OSError:
        return None  # evidence is best effort: never fail a teardown over it
    return dest


class RunArtifacts:
    """The CLI's side: make the run directory, prune it at the end, say where it is."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"keep-artifacts mode {mode!r} (valid: {', '.join(MODES)})")
        self.mode = mode
        self.root: str | None = None
        if mode != "never":
            # Named now, made by the first guest that leaves evidence: a run without
            # guests (or one that is interrupted before any) leaves no directory.
            self.root = os.path.join(tempfile.gettempdir(), f"{PREFIX}{os.getpid()}-{time.time_ns()}")

    def env(self) -> dict[str, str]:
        return {ENV_ROOT: self.root} if self.root else {}

    def discard(self) -> None:
        """An interrupted run: nothing it left is kept (a run leaks no files)."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def finish(self, results: Iterable[Any], out: TextIO = sys.stderr) -> str | None:
        """Drop what is not kept; print and return the directory if anything is left."""
        root = self.root
        if root is None or not os.path.isdir(root):
            return None
        if self.mode == "on-failure":
            for r in results:
                if r.passed:
                    shutil.rmtree(os.path.join(root, file_slug(r.path)), ignore_errors=True)
        try:
            left = os.listdir(root)
        except OSError:
            return None
        if not left:
            os.rmdir(root)
            return None
        what = "of failed files " if self.mode == "on-failure" else ""
        print(f"provium: VM evidence {what}(console log, QMP log, QEMU argv) kept in {root}", file=out)
        return root

"""`provium.reset_between_tests = true`: a baseline lab snapshot after the file
chunk, restored in place after every test.

The baseline covers the file's root lab (and its sub-labs).  Restoring in
place keeps every VM object, so handles the chunk made at file scope (VMs,
processes started there) stay valid: the guests are put back into exactly the
state those handles were made in.  Open streams at file scope are refused up
front (they would be cut by every restore), with the reference's message.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import TestFileError
from ..host import labsnap
from ..host.labsnap import LabSnapshot


class BaselineError(TestFileError):
    """The baseline could not be taken; the text is the file's chunk error."""


def wanted(state: Any) -> bool:
    return state.file_config.get("reset_between_tests") is True


def take_baseline(state: Any) -> LabSnapshot:
    name = os.path.basename(state.path)
    streams = []
    for _, vm in state.root.all_vms():
        streams.extend(vm.open_resources()[1])
    if streams:
        lines = [f"{name}: cannot use reset_between_tests with file-scope streams"]
        for m in streams:
            site = f" at {m.creation_site[0]}:{m.creation_site[1]}" if m.creation_site else ""
            lines.append(f"  - {m.kind} ({m.detail}){site} opens a stream at file scope")
        lines.append("  reset_between_tests would auto-snapshot after this stream is open")
        lines.append("  Either move the stream into a test() block, or set reset_between_tests = false.")
        raise BaselineError("\n".join(lines))
    try:
        baseline = labsnap.snapshot(state.root)
    except Exception as exc:  # any failure is this file's chunk error
        raise BaselineError(f"reset_between_tests baseline snapshot failed: {exc}") from exc
    labsnap.prestart_in_place(state.root, baseline)
    return baseline


def restore_baseline(state: Any, baseline: LabSnapshot) -> None:
    """Put the root lab back; a failure is reported on stderr and the run goes on."""
    try:
        labsnap.restore_in_place(state.root, baseline)
        labsnap.prestart_in_place(state.root, baseline)
    except Exception as exc:  # noqa: BLE001 - the next test will see what is left
        print(f"provium: reset_between_tests restore failed in `{state.path}`: {exc}", file=sys.stderr)


def drop(baseline: LabSnapshot | None) -> None:
    if baseline is not None:
        try:
            baseline.delete()
        except Exception:  # noqa: BLE001, S110
            pass

"""The progress line shows running, waiting and done files from the event stream."""

from __future__ import annotations

import io

from rich.console import Console

from provium.cli.progress import ProgressBar
from provium.events import types as ev


def frame(payload) -> ev.EventFrame:
    return ev.EventFrame(ts=0, kind=payload.KIND, payload=payload)


def test_running_waiting_and_done():
    bar = ProgressBar(Console(file=io.StringIO()), total=3)
    for p in ("a", "b", "c"):
        bar.on_event(frame(ev.FileDiscovered(path=p)))
    bar.on_event(frame(ev.FileDispatched(path="a")))
    bar.on_event(frame(ev.FileBlocked(path="b", reason="pool_full")))
    bar.on_event(frame(ev.FileBlocked(path="c", reason="pool_full")))
    assert bar.message() == "1 running · 2 waiting · booting"
    bar.on_event(frame(ev.VmSpawned(file="a", vm_name="v", profile="linux", memory_bytes=1, cid=3)))
    bar.on_event(frame(ev.TestPassed(path="a", name="t", duration_ns=1)))
    bar.on_event(frame(ev.FileCompleted(path="a", status="passed", duration_ns=1)))
    bar.on_event(frame(ev.FileDispatched(path="b")))
    assert bar.message() == "1 running · 1 waiting · 1 vms · 1 tests"
    assert bar.progress.tasks[0].completed == 1

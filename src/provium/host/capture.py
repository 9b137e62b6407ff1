"""`bridge:capture()` / `nic:capture()`: a stream of pcap bytes, and the same bytes in a file.

The switch copies every frame it sees on the bridge (or on one NIC, both
directions) into a `net.pcap.PcapSink`; this stream reads the sink's buffer
(global header first, then records), and the sink also writes a classic pcap
file that tshark, tcpdump or dpkt can open (`path()`; give `file=` to keep it
after the run: otherwise it lives in the switch's scratch directory).

An open capture counts as an open stream of every VM it watches, so a snapshot
of those VMs (or of their lab) is refused until it is closed, as for a tail.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..net.pcap import PcapSink
from .pynames import python_names
from .registry import ResourceMeta
from .streams import TIMEOUT, Stream

if TYPE_CHECKING:
    from .vm import VM

_ids = itertools.count(1)


@python_names
class Capture(Stream):
    NAME = "capture"
    MSG_TIMEOUT = "capture:{op} timed out waiting for {pat}"
    MSG_EOF = "capture:{op} eof waiting for {pat}"  # the reference's wording
    MSG_CLOSED = "capture closed"

    def __init__(self, sink: PcapSink, label: str, meta: ResourceMeta, vms: list[VM],
                 detach: Callable[[], None]) -> None:
        super().__init__(meta)
        self._sink = sink
        self.label = label
        tokens = [(vm, vm._registry.add_stream(meta)) for vm in vms]
        self._finalizer = weakref.finalize(self, _release, sink, tokens, detach)

    def _read(self, timeout: float | None) -> Any:
        got = self._sink.read(timeout)
        if got is None:
            return None
        return got if got else TIMEOUT

    def _close_source(self) -> None:
        self._finalizer()

    def end(self) -> None:
        """The source is gone (its bridge closed): stop recording; reads see EOF after
        the bytes already captured.  The stream stays open until `close`."""
        self._finalizer()

    def path(self) -> str:
        """The pcap file (complete up to the last frame the switch handled)."""
        return str(self._sink.path)

    def frames(self) -> int:
        return self._sink.frames

    def __str__(self) -> str:
        return f"capture({self.label})"

    __repr__ = __str__


def _release(sink: PcapSink, tokens: list, detach: Callable[[], None]) -> None:
    try:
        detach()
    finally:
        sink.close()
        for vm, token in tokens:
            vm._registry.remove_stream(token)


def capture_path(root: Path | None, given: Any, label: str) -> Path:
    if given is not None:
        p = Path(given).expanduser()
        return p if p.is_absolute() else Path.cwd() / p
    assert root is not None
    return root / f"capture-{next(_ids)}-{label}.pcap"

"""Per-VM registry of open agent file handles and open streams.

Snapshots need a quiet VM (no open handle, no stream in flight), and the
diagnostics for a refused snapshot name each open resource and where it was
created.  Closing a resource always deregisters it, even when the agent call
behind the close fails.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass


@dataclass
class ResourceMeta:
    kind: str  # tail_file, fd_stream, file_tail_stream, proc_stdout_stream, open_file, ...
    detail: str  # e.g. the quoted path or a handle id
    creation_site: tuple[str, int] | None = None
    test_name: str | None = None

    def describe(self) -> str:
        text = f"{self.kind}({self.detail})"
        if self.creation_site:
            text += f" created at {self.creation_site[0]}:{self.creation_site[1]}"
        if self.test_name:
            text += f' (test "{self.test_name}")'
        return text


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[int, ResourceMeta] = {}
        self._streams: dict[int, ResourceMeta] = {}
        self._ids = itertools.count(1)

    def add_file(self, handle: int, meta: ResourceMeta) -> None:
        with self._lock:
            self._files[handle] = meta

    def remove_file(self, handle: int) -> None:
        with self._lock:
            self._files.pop(handle, None)

    def add_stream(self, meta: ResourceMeta) -> int:
        with self._lock:
            token = next(self._ids)
            self._streams[token] = meta
            return token

    def remove_stream(self, token: int) -> None:
        with self._lock:
            self._streams.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._streams.clear()

    @property
    def file_count(self) -> int:
        return len(self._files)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def files(self) -> list[ResourceMeta]:
        with self._lock:
            return list(self._files.values())

    def streams(self) -> list[ResourceMeta]:
        with self._lock:
            return list(self._streams.values())

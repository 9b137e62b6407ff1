"""Shared value types of the host<->agent wire (field names follow the reference).

All of them, for the host: each is defined in `core` (what every session needs)
or in the module of the op family that uses it (`ops_files`, `ops_procs`, ...),
which the agent imports only on that family's first op (see kinds.py).
"""

from __future__ import annotations

from .core import AgentError, AgentErrorKind, AgentInfo, OpResult, OsError, _decode_tagged, _Tagged
from .ops_files import DirEntry, EntryType, FileMetadata, OpenMode, SeekWhence, WriteFileMode
from .ops_procs import ExitStatus, ProcessLiveStatus
from .ops_streams import ProcStreamChannel, StreamEnd, TailStart
from .ops_syscalls import NestedPtr

__all__ = [
    "AgentError", "AgentErrorKind", "AgentInfo", "DirEntry", "EntryType", "ExitStatus", "FileMetadata",
    "NestedPtr", "OpResult", "OpenMode", "OsError", "ProcStreamChannel", "ProcessLiveStatus", "SeekWhence",
    "StreamEnd", "TailStart", "WriteFileMode", "_Tagged", "_decode_tagged",
]

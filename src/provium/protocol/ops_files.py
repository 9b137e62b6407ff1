"""Wire types of the file ops: open/read/write/seek/close handles, whole files, stat,
listdir, mkdir, unlink, rename (imported on the first such op, see kinds.py)."""

import enum
from dataclasses import dataclass, field

from .codec import ANY, wire_name
from .core import OpResult, WrittenOk

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = ANY  # at run time, what the codec reads as typing.Any


class EntryType(str, enum.Enum):
    """What a path is; the wire spells these as the reference does, and so do Lua and Python."""

    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    BLOCK_DEVICE = "block_device"
    CHAR_DEVICE = "char_device"
    OTHER = "other"


class WriteFileMode(str, enum.Enum):
    REPLACE = "replace"
    APPEND = "append"
    EXCLUSIVE = "exclusive"


class SeekWhence(str, enum.Enum):
    SET = "set"
    CUR = "cur"
    END = "end"


@dataclass
class DirEntry:
    """One entry of a directory listing."""

    name: str
    entry_type: EntryType


@dataclass
class FileMetadata:
    """What stat tells about a path."""

    size: int
    mtime_ns: int
    entry_type: EntryType
    perm: int


@dataclass
class OpenMode:
    """How to open a file; every flag is always sent."""

    read: bool = False
    write: bool = False
    create: bool = False
    truncate: bool = False
    append: bool = False
    exclusive: bool = False


@dataclass
class DataOk:
    """Bytes read."""

    data: bytes


@dataclass
class OpenFileArgs:
    """Open a file and hand back a file handle."""

    KIND = "open_file"
    REPLY = ("open_file_result", OpResult.of(int))
    path: str
    mode: OpenMode = field(default_factory=OpenMode)
    create_perm: int | None = None


@dataclass
class ReadArgs:
    """Read from an open file handle."""

    KIND = "read"
    REPLY = ("read_result", OpResult.of(DataOk))
    handle: int
    max_bytes: int


@dataclass
class WriteArgs:
    """Write to an open file handle (one write(2))."""

    KIND = "write"
    REPLY = ("write_result", OpResult.of(WrittenOk))
    handle: int
    data: bytes


@dataclass
class CloseArgs:
    """Close a file handle."""

    KIND = "close"
    REPLY = ("close_result", OpResult.of(type(None)))
    handle: int


@dataclass
class ReadFileArgs:
    """Read a whole file."""

    KIND = "read_file"
    REPLY = ("read_file_result", OpResult.of(DataOk))
    path: str


@dataclass
class WriteFileArgs:
    """Write a whole file (replace, append or create exclusively)."""

    KIND = "write_file"
    REPLY = ("write_file_result", OpResult.of(type(None)))
    path: str
    data: bytes
    mode: WriteFileMode = WriteFileMode.REPLACE
    create_perm: int | None = None


@dataclass
class StatArgs:
    """Metadata of a path."""

    KIND = "stat"
    REPLY = ("stat_result", OpResult.of(FileMetadata))
    path: str
    follow_symlinks: bool = True


@dataclass
class ListdirArgs:
    """The entries of a directory."""

    KIND = "listdir"
    REPLY = ("listdir_result", OpResult.of(list[DirEntry]))
    path: str


@dataclass
class MkdirArgs:
    """Create a directory (and its parents, if asked)."""

    KIND = "mkdir"
    REPLY = ("mkdir_result", OpResult.of(type(None)))
    path: str
    parents: bool = False
    create_perm: int | None = None


@dataclass
class UnlinkArgs:
    """Remove a file or an empty directory."""

    KIND = "unlink"
    REPLY = ("unlink_result", OpResult.of(type(None)))
    path: str


@dataclass
class RenameArgs:
    """Rename a path."""

    KIND = "rename"
    REPLY = ("rename_result", OpResult.of(type(None)))
    from_: str = wire_name("from")
    to: str = ""


@dataclass
class SeekArgs:
    """Move an open file handle's position."""

    KIND = "seek"
    REPLY = ("seek_result", OpResult.of(int))
    handle: int
    offset: int
    whence: SeekWhence = SeekWhence.SET


OPS: "list[Any]" = [OpenFileArgs, ReadArgs, WriteArgs, CloseArgs, ReadFileArgs, WriteFileArgs, StatArgs,
                    ListdirArgs, MkdirArgs, UnlinkArgs, RenameArgs, SeekArgs]
HOST_KINDS: dict[str, Any] = {op.KIND: op for op in OPS}
AGENT_KINDS: dict[str, Any] = {op.REPLY[0]: op.REPLY[1] for op in OPS}

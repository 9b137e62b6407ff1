"""File ops: open handles (open/read/write/seek/close) and whole-path ops.

Every failing OS call is an `err` outcome carrying its errno; only a request
that cannot be right (an unknown handle) is an agent error.
"""

from __future__ import annotations

import os
import stat as _stat

from provium.protocol.framing import BLOB_MIN, Blob
from provium.protocol.core import OpResult, WrittenOk
from provium.protocol.ops_files import DataOk, DirEntry, EntryType, FileMetadata, SeekWhence, WriteFileMode

from .base import os_fail, unknown
from .state import FileEntry

MAX_READ = 4 << 20  # one `read` returns at most this much
MAX_READ_FILE = 96 << 20  # read_file refuses bigger files (a reply must fit a frame)
DEFAULT_FILE_PERM = 0o644
DEFAULT_DIR_PERM = 0o755
EINVAL = 22
EFBIG = 27


def _file(ctx, op_name: str, handle: int) -> FileEntry:
    entry = ctx.state.get(ctx.state.files, handle)
    if entry is None:
        raise unknown(op_name, "file", handle)
    return entry


def open_flags(mode) -> int | str:
    """OpenMode -> open(2) flags, or a message saying why the mode is invalid."""
    writing = mode.write or mode.append
    if mode.read and writing:
        flags = os.O_RDWR
    elif writing:
        flags = os.O_WRONLY
    elif mode.read:
        flags = os.O_RDONLY
    else:
        return "mode has none of `read`, `write`, `append` set; at least one is needed"
    if (mode.create or mode.truncate or mode.exclusive) and not writing:
        return "`create`, `truncate` and `exclusive` need `write` or `append`"
    if mode.truncate and mode.append:
        return "`truncate` and `append` cannot be combined"
    if mode.append:
        flags |= os.O_APPEND
    if mode.exclusive:
        flags |= os.O_CREAT | os.O_EXCL  # create a new file; fail if one exists
    else:
        if mode.create:
            flags |= os.O_CREAT
        if mode.truncate:
            flags |= os.O_TRUNC
    return flags | os.O_CLOEXEC


def open_file(ctx, op):
    flags = open_flags(op.mode)
    if isinstance(flags, str):
        return OpResult.failure(EINVAL, f"open_file: {op.path}: {flags}")
    perm = DEFAULT_FILE_PERM if op.create_perm is None else op.create_perm & 0o7777
    try:
        fd = os.open(op.path, flags, perm)
    except OSError as exc:
        return os_fail("open_file", exc, op.path)
    return OpResult.success(ctx.state.add(ctx.state.files, FileEntry(fd, op.path)))


def read(ctx, op):
    entry = _file(ctx, "read", op.handle)
    n = max(0, min(op.max_bytes, MAX_READ))
    try:
        return OpResult.success(DataOk(os.read(entry.fd, n)))
    except OSError as exc:
        return os_fail("read", exc, entry.path)


def write(ctx, op):
    entry = _file(ctx, "write", op.handle)
    try:
        return OpResult.success(WrittenOk(os.write(entry.fd, op.data)))
    except OSError as exc:
        return os_fail("write", exc, entry.path)


def close(ctx, op):
    entry = ctx.state.pop(ctx.state.files, op.handle)
    if entry is None:
        raise unknown("close", "file", op.handle)
    try:
        os.close(entry.fd)
    except OSError as exc:
        return os_fail("close", exc, entry.path)
    return OpResult.success(None)


_WHENCE = {SeekWhence.SET: os.SEEK_SET, SeekWhence.CUR: os.SEEK_CUR, SeekWhence.END: os.SEEK_END}


def seek(ctx, op):
    entry = _file(ctx, "seek", op.handle)
    # A position before the start is EINVAL (POSIX lseek), never silently 0.
    try:
        return OpResult.success(os.lseek(entry.fd, op.offset, _WHENCE[op.whence]))
    except OSError as exc:
        return os_fail("seek", exc, entry.path)
    except OverflowError:
        return OpResult.failure(EINVAL, f"seek: {entry.path}: offset {op.offset} is out of range")


def read_file(ctx, op):
    try:
        fd = os.open(op.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return os_fail("read_file", exc, op.path)
    try:
        st = os.fstat(fd)
        if _stat.S_ISREG(st.st_mode) and st.st_size > MAX_READ_FILE:
            return OpResult.failure(
                EFBIG,
                f"read_file: {op.path} is {st.st_size} bytes, more than the {MAX_READ_FILE >> 20} MiB "
                "one reply may carry; read it in pieces with open_file + read, or follow it with tail_file",
            )
        parts = []
        total = 0
        # A regular file in one read of its size (+1 to see its end): no joining
        # of pieces, and the reply writes it out from this very buffer (Blob).
        want = min(st.st_size + 1, MAX_READ_FILE + 1) if _stat.S_ISREG(st.st_mode) else 1 << 20
        while True:
            chunk = os.read(fd, max(want, 1 << 16))
            want = 1 << 20
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_READ_FILE:  # a growing or special file
                return OpResult.failure(
                    EFBIG,
                    f"read_file: {op.path} yielded more than {MAX_READ_FILE >> 20} MiB; "
                    "use open_file + read or tail_file",
                )
            parts.append(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        # A Blob is bytes on the wire; only the sender's encoder sees the difference.
        return OpResult.success(DataOk(Blob(data) if len(data) >= BLOB_MIN else data))
    except OSError as exc:
        return os_fail("read_file", exc, op.path)
    finally:
        os.close(fd)


_WRITE_FLAGS = {
    WriteFileMode.REPLACE: os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    WriteFileMode.APPEND: os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    WriteFileMode.EXCLUSIVE: os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


def write_file(ctx, op):
    perm = DEFAULT_FILE_PERM if op.create_perm is None else op.create_perm & 0o7777
    try:
        fd = os.open(op.path, _WRITE_FLAGS[op.mode] | os.O_CLOEXEC, perm)
    except OSError as exc:
        return os_fail("write_file", exc, op.path)
    try:
        view = memoryview(op.data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        return os_fail("write_file", exc, op.path)
    finally:
        os.close(fd)
    return OpResult.success(None)


_TYPES = {
    _stat.S_IFREG: EntryType.FILE, _stat.S_IFDIR: EntryType.DIR, _stat.S_IFLNK: EntryType.SYMLINK,
    _stat.S_IFIFO: EntryType.FIFO, _stat.S_IFSOCK: EntryType.SOCKET, _stat.S_IFBLK: EntryType.BLOCK_DEVICE,
    _stat.S_IFCHR: EntryType.CHAR_DEVICE,
}


def entry_type(mode: int) -> EntryType:
    return _TYPES.get(_stat.S_IFMT(mode), EntryType.OTHER)


def stat(ctx, op):
    try:
        st = os.stat(op.path, follow_symlinks=op.follow_symlinks)
    except OSError as exc:
        return os_fail("stat", exc, op.path)
    return OpResult.success(FileMetadata(
        size=st.st_size, mtime_ns=st.st_mtime_ns, entry_type=entry_type(st.st_mode),
        perm=st.st_mode & 0o7777,
    ))


def listdir(ctx, op):
    try:
        out = []
        with os.scandir(op.path) as it:  # never yields . or ..
            for e in it:
                try:
                    kind = entry_type(e.stat(follow_symlinks=False).st_mode)
                except OSError:
                    kind = EntryType.OTHER  # vanished meanwhile
                out.append(DirEntry(e.name, kind))
    except OSError as exc:
        return os_fail("listdir", exc, op.path)
    return OpResult.success(out)


def _mkdirs(path: str, perm: int) -> None:
    """mkdir -p with `perm` on every directory it creates (not only the last)."""
    try:
        os.mkdir(path, perm)
        return
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
    _mkdirs(parent, perm)
    try:
        os.mkdir(path, perm)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def mkdir(ctx, op):
    perm = DEFAULT_DIR_PERM if op.create_perm is None else op.create_perm & 0o7777
    try:
        if op.parents:
            _mkdirs(op.path, perm)
        else:
            os.mkdir(op.path, perm)
    except OSError as exc:
        return os_fail("mkdir", exc, op.path)
    return OpResult.success(None)


def unlink(ctx, op):
    try:
        try:
            os.unlink(op.path)
        except IsADirectoryError:
            os.rmdir(op.path)  # an empty directory may be removed too
    except OSError as exc:
        return os_fail("unlink", exc, op.path)
    return OpResult.success(None)


def rename(ctx, op):
    try:
        os.rename(op.from_, op.to)
    except OSError as exc:
        return os_fail("rename", exc, f"{op.from_} -> {op.to}")
    return OpResult.success(None)


HANDLERS = {
    "open_file": open_file, "read": read, "write": write, "close": close, "seek": seek,
    "read_file": read_file, "write_file": write_file, "stat": stat, "listdir": listdir,
    "mkdir": mkdir, "unlink": unlink, "rename": rename,
}

"""Files provium writes or reads on the host on a user's behalf: reports, state, sockets.

A path given to `--junit`, `--save-events`, `--events-socket` or `PROVIUM_RERUN_STATE`
may name anything: a device (`/dev/null`), a FIFO (`>(cat)`), a symlink, another
user's file, a test file.  The rules here keep provium from damaging the host:

* a write never renames over anything but a regular file this user owns; a device,
  FIFO or socket is written into (or refused), never replaced; a symlink's target
  is written, the link itself is kept;
* a missing parent directory is an error, never created;
* new files get the mode the umask allows (0666 & ~umask), as `open()` would;
* a read refuses anything but a regular file and stops at a size limit, so
  `/dev/zero` or a FIFO cannot exhaust memory or block the run.
"""

from __future__ import annotations

import errno
import os
import stat

from provium.errors import ConfigError
from provium.fsutil import atomic_write


class HostFileError(ConfigError, OSError):
    """A host path given by the user cannot be used safely (message names the path and why)."""

    def __str__(self) -> str:
        return str(self.strerror)


def current_umask() -> int:
    """The process umask, read without changing it (`os.umask` would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def check_parent(path: str | os.PathLike, what: str) -> None:
    """Refuse a path whose directory does not exist (we never create it)."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path))) or "/"
    if not os.path.isdir(parent):
        raise HostFileError(errno.ENOENT, f"{what}: directory `{parent}` does not exist (create it first)")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def write_file(path: str | os.PathLike, data: bytes, *, what: str) -> None:
    """Write `data` to the user-named `path` without damaging what is there.

    Regular file owned by us (or missing): written to a temp file and renamed in,
    so a reader never sees half of it; its mode is kept (a new one gets the
    umask's).  A symlink: the same, at its target.  A character device or a FIFO
    (`/dev/null`, `/dev/stdout`, `>(cat)`): written into, never replaced.  A
    regular file of another user: rewritten in place (the kernel checks our
    right to), never replaced by one of ours.  Anything else is refused.
    """
    target = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise HostFileError(exc.errno, f"{what}: cannot use `{path}`: {exc.strerror}") from exc
    if st is None:
        check_parent(target, what)
        _replace(target, data, 0o666 & ~current_umask())
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
        _replace(target, data, stat.S_IMODE(st.st_mode))
        return
    if stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_TRUNC if stat.S_ISREG(st.st_mode) else 0)
        try:
            fd = os.open(target, flags)
        except OSError as exc:
            raise HostFileError(exc.errno, f"{what}: cannot write `{path}`: {exc.strerror}") from exc
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return
    raise HostFileError(errno.EINVAL, f"{what}: `{path}` is a {_kind(st.st_mode)}; give a file path")


def _replace(target: str, data: bytes, mode: int) -> None:
    # Never creates the parent directory: a missing one is the user's error to see.
    atomic_write(target, data, mode, make_parents=False)


def read_file(path: str | os.PathLike, *, limit: int, what: str) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes; None when it does not exist.

    Opened non-blocking (a FIFO must not stall the run) and checked with fstat
    before any byte is read; refuses other kinds of files and files over `limit`.
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HostFileError(exc.errno, f"{what}: cannot read `{path}`: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostFileError(errno.EINVAL, f"{what}: `{path}` is a {_kind(st.st_mode)}, not a regular file")
        chunks = []
        total = 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:
                raise HostFileError(errno.EFBIG, f"{what}: `{path}` is larger than {limit} bytes; refusing to read it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_stale_socket(path: str | os.PathLike, what: str) -> None:
    """Remove `path` only if it is a unix socket nobody listens on; refuse anything else."""
    import socket

    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else ("file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode))
        raise HostFileError(errno.EEXIST, f"{what}: `{p}` exists and is a {kind}, not a socket; "
                                          f"refusing to replace it (remove it or pick another path)")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
    except ConnectionRefusedError:
        pass  # stale: nobody listens
    except OSError:
        pass
    else:
        raise HostFileError(errno.EADDRINUSE, f"{what}: `{p}` is a socket another process is listening on")
    finally:
        s.close()
    os.unlink(p)

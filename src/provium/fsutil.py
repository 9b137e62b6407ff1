"""Files: writing one so that no reader ever sees half of it, reading the end of one;
and how a file name that is not valid UTF-8 is shown (`printable`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Union

Data = Union[bytes, bytearray, memoryview, str, Iterable[Union[bytes, bytearray, memoryview]]]


def atomic_write(path: str | os.PathLike, data: Data, mode: int | None = None, *,
                 make_parents: bool = True) -> Path:
    """Replace `path` with `data` in one step; returns `path` as a Path.

    `data` is bytes, text (written as UTF-8), or an iterable of byte chunks written
    one after another.  The bytes go to a temp file in the same directory (a rename
    is only atomic within one filesystem), which `os.replace` then puts in place, so a
    reader sees the old file or the whole new one; on any failure, Ctrl-C included,
    the temp file is removed.  Each writer has its own temp name: when two race, the
    last rename wins.  Temp names start with "." so directory scans can skip them.

    `mode` sets the permission bits; None leaves the temp file's owner-only 0o600.
    Missing parent directories are created, unless `make_parents` is false (then the
    write fails with FileNotFoundError).
    """
    path = Path(path)
    d = os.path.dirname(os.path.abspath(path))
    if make_parents:
        os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_tail(path: str | os.PathLike, n: int) -> bytes:
    """The last `n` bytes of a file (all of a shorter one); b"" when it cannot be read.

    The one helper for console logs, QEMU's stderr and runner output: a log that is
    still growing is read up to where it ends now.
    """
    if n <= 0:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read()
    except OSError:
        return b""


def printable(text: str) -> str:
    """`text` (a path as Python holds it, undecodable bytes as surrogate escapes) with
    each byte that is not UTF-8 written as `\\xNN`: valid UTF-8, so it can be printed,
    put in JSON, XML or an event.  A valid UTF-8 name is returned unchanged.

    Lossless for every name that holds no backslash: `\\xNN` stands for byte NN
    (docs/running.md, "File names").  Other lone surrogates (not from a file name)
    are left for the writer's own replacement."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)

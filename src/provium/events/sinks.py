"""Where event frames go: nowhere, a file, a file descriptor, stdout, a unix socket.

Every sink takes an event, stamps it with the time *it* writes it, and writes
the whole frame with one write call.  Emitting never fails a run: a write error
is reported once on stderr (`provium: event emit failed: ...`) and the event is
dropped.  `write_frame` is the strict form (it raises) for callers that must know.
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from provium.hostfiles import HostFileError, check_parent, remove_stale_socket

from .types import EventFrame

# sun_path is 108 bytes on Linux, the terminating NUL included.
_SUN_PATH_MAX = 108


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def _report(msg: str) -> None:
    try:
        print(f"provium: {msg}", file=sys.stderr, flush=True)
    except Exception:
        pass


class Sink:
    """Base sink.  Subclasses implement `write_frame(frame)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reported = False

    def emit(self, event: Any) -> None:
        """Stamp `event` now and write it; errors are reported, not raised."""
        self.emit_frame(EventFrame.of(event))

    def emit_frame(self, frame: EventFrame) -> None:
        """Write an already-stamped frame (used when forwarding a runner's stream)."""
        try:
            self.write_frame(frame)
        except Exception as exc:  # a full disk or a dead pipe must not fail the run
            if not self._reported:
                self._reported = True
                _report(f"event emit failed ({type(self).__name__}): {exc}")

    def write_frame(self, frame: EventFrame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullSink(Sink):
    """Events discarded (no event flag given)."""

    def write_frame(self, frame: EventFrame) -> None:
        pass


class FdSink(Sink):
    """Frames written to a file descriptor, e.g. the pipe from a runner subprocess."""

    def __init__(self, fd: int, *, close_fd: bool = False) -> None:
        super().__init__()
        self.fd = fd
        self._close_fd = close_fd

    def write_frame(self, frame: EventFrame) -> None:
        data = frame.encode()
        with self._lock:
            if self.fd < 0:
                raise OSError(errno.EBADF, "sink is closed")
            _write_all(self.fd, data)

    def close(self) -> None:
        with self._lock:
            if self._close_fd and self.fd >= 0:
                os.close(self.fd)
            self.fd = -1


class FileSink(FdSink):
    """Append frames to a file; each frame under an exclusive flock so several
    provium processes can share one file and interleave only at frame boundaries."""

    def __init__(self, path: str | os.PathLike, *, truncate: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open event file `{self.path}`: {exc.strerror}") from exc
        super().__init__(fd, close_fd=True)

    def write_frame(self, frame: EventFrame) -> None:
        data = frame.encode()
        with self._lock:
            if self.fd < 0:
                raise OSError(errno.EBADF, "sink is closed")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                _write_all(self.fd, data)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


class StdoutSink(Sink):
    """Frames on stdout (binary); human output then goes to stderr."""

    def __init__(self, stream=None) -> None:
        super().__init__()
        self._stream = stream

    def write_frame(self, frame: EventFrame) -> None:
        data = frame.encode()
        out = self._stream if self._stream is not None else sys.stdout.buffer
        with self._lock:
            out.write(data)
            out.flush()


class CallbackSink(Sink):
    """Hands each frame to a function in-process (the progress bar, tests)."""

    def __init__(self, fn: Callable[[EventFrame], None]) -> None:
        super().__init__()
        self.fn = fn

    def write_frame(self, frame: EventFrame) -> None:
        with self._lock:
            self.fn(frame)


class UnixSocketSink(Sink):
    """Listens on a unix socket and copies every frame to each connected client.

    No replay: a client sees frames written after it connected.  A client that
    cannot take a frame within `write_timeout` seconds (or has gone) is dropped.
    The socket file is removed on close.
    """

    def __init__(self, path: str | os.PathLike, *, write_timeout: float = 0.1) -> None:
        super().__init__()
        self.path = Path(path)
        self.write_timeout = write_timeout
        self._clients: list[socket.socket] = []
        self._closed = False
        what = "--events-socket"
        # Bind under a temporary name and rename once listening, so a client that
        # sees the path can always connect.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        limit = _SUN_PATH_MAX - 1 - (len(os.fsencode(tmp.name)) - len(os.fsencode(self.path.name)))
        if len(os.fsencode(str(self.path))) > limit:
            raise HostFileError(errno.ENAMETOOLONG, f"{what}: unix socket path `{self.path}` is too long "
                                f"({len(os.fsencode(str(self.path)))} bytes; at most {limit} here)")
        check_parent(self.path, what)
        remove_stale_socket(self.path, what)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            self._listener.bind(str(tmp))
            self._listener.listen(16)
            os.rename(tmp, self.path)
        except OSError as exc:
            self._listener.close()
            try:
                tmp.unlink()
            except OSError:
                pass
            raise OSError(exc.errno, f"cannot listen on `{self.path}`: {exc.strerror or exc}") from exc
        self._listener.setblocking(False)
        # A pipe wakes the accept thread on close, so close() never waits on a timeout.
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._accept_loop, name="provium-events-socket", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj is self._listener:
                        try:
                            conn, _ = self._listener.accept()
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            return
                        conn.setblocking(True)
                        conn.settimeout(self.write_timeout)
                        with self._lock:
                            if self._closed:
                                conn.close()
                                return
                            self._clients.append(conn)
                    else:
                        return
        finally:
            sel.close()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def write_frame(self, frame: EventFrame) -> None:
        data = frame.encode()
        with self._lock:
            alive = []
            for c in self._clients:
                try:
                    c.sendall(data)
                    alive.append(c)
                except OSError:  # gone, or too slow: drop silently
                    try:
                        c.close()
                    except OSError:
                        pass
            self._clients = alive

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients, self._clients = self._clients, []
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for c in clients:
            try:
                c.close()
            except OSError:
                pass
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            if self.path.is_socket():  # only ours: never a file someone put there since
                self.path.unlink()
        except OSError:
            pass


class MultiSink(Sink):
    """Fans each event out to several sinks; each stamps its own time."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        super().__init__()
        self.sinks: list[Sink] = list(sinks)

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, event: Any) -> None:
        for s in self.sinks:
            s.emit(event)

    def emit_frame(self, frame: EventFrame) -> None:
        for s in self.sinks:
            s.emit_frame(frame)

    def write_frame(self, frame: EventFrame) -> None:
        for s in self.sinks:
            s.write_frame(frame)

    def close(self) -> None:
        for s in self.sinks:
            s.close()

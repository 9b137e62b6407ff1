"""Byte streams: the shared reading logic and the agent-backed `Tail`.

`Stream` holds what every stream type shares (the pending buffer, substring
matching, deadlines, the error texts); a concrete stream only supplies
`_read(timeout)`.  `Tail` reads one agent stream channel (tail_file, fd_stream,
a process's stdout/stderr).  The console and capture streams elsewhere subclass
`Stream` with their own transport and messages.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

from ..protocol.mux import ClientError, MuxStream
from .pynames import python_names
from .agent_errors import os_error
from .errors import ArgumentError, StreamClosed, StreamEof, StreamTimeout
from .registry import ResourceMeta
from .values import parse_duration, type_name

if TYPE_CHECKING:
    from .vm import VM

TIMEOUT = object()  # `_read` result: nothing arrived in time


def _pattern(value: Any, method: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ArgumentError(f"{method}: pattern must be a string, got {type_name(value)}")


def _show(pat: bytes) -> str:
    return pat.decode("utf-8", "replace")


SEEN_TAIL = 200  # bytes of what did arrive that a timeout message quotes


def _seen(acc: bytes | bytearray) -> str:
    """What arrived while we waited, for a timeout message (the test author's first question)."""
    if not acc:
        return " (nothing arrived)"
    tail = bytes(acc[-SEEN_TAIL:]).decode("utf-8", "replace")
    more = "last " if len(acc) > SEEN_TAIL else ""
    return f" ({len(acc)} bytes arrived; {more}{tail!r})"


@python_names
class Stream:
    """Base class: `next`, `read_until`, `expect`, `drain`, `close`, `eof`.

    Subclasses implement `_read(timeout)` returning bytes, `None` at end of
    stream, or `TIMEOUT`, and `_close_source()`.  Class attributes set the
    defaults (seconds) and the words used in errors.
    """

    NAME = "stream"  # prefix of method names in argument errors
    NEXT_DEFAULT = 10.0
    UNTIL_DEFAULT = 10.0
    DRAIN_DEFAULT = 0.5
    MSG_TIMEOUT = "{op} timed out waiting for `{pat}`"
    MSG_EOF = "stream EOF"
    MSG_CLOSED = "stream closed"

    def __init__(self, meta: ResourceMeta | None = None) -> None:
        self.meta = meta
        self._pending = b""
        self._at_eof = False
        self._closed = False

    # -- to implement ---------------------------------------------------------------

    def _read(self, timeout: float | None) -> Any:
        raise NotImplementedError

    def _close_source(self) -> None:
        pass

    # -- API ------------------------------------------------------------------------

    def next(self, timeout: Any = None) -> bytes | None:
        """The next chunk: pending leftovers first, else one read.  None on timeout,
        at end of stream, or after close."""
        t = parse_duration(timeout, f"{self.NAME}:next timeout", allow_none=True)
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        if self._closed or self._at_eof:
            return None
        got = self._read(self.NEXT_DEFAULT if t is None else t)
        if got is None:
            self._at_eof = True
            return None
        if got is TIMEOUT or not got:
            return None
        return got

    def read_until(self, pattern: Any, timeout: Any = None) -> bytes:
        """Everything up to and including the first occurrence of `pattern` (plain
        bytes, no regex).  Bytes after the match stay pending for the next read."""
        return self._until(pattern, timeout, "read_until")

    def expect(self, pattern: Any, timeout: Any = None) -> None:
        """Like read_until, discarding the matched text; raises if it never comes."""
        self._until(pattern, timeout, "expect")

    def drain(self, timeout: Any = None) -> list[bytes]:
        """Whatever arrives within `timeout` (default 0.5 s), as a list of chunks."""
        t = parse_duration(timeout, f"{self.NAME}:drain timeout", allow_none=True)
        t = self.DRAIN_DEFAULT if t is None else t
        chunks = []
        if self._pending:
            chunks.append(self._pending)
            self._pending = b""
        if self._closed or self._at_eof:
            return chunks
        deadline = time.monotonic() + t
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got = self._read(remaining)
            if got is None:
                self._at_eof = True
                break
            if got is TIMEOUT:
                break
            if got:
                chunks.append(got)
        return chunks

    def close(self) -> None:
        """Stop reading; drops pending bytes.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending = b""
        self._close_source()

    def eof(self) -> bool:
        """True once the stream ended (or was closed) and nothing is left pending."""
        if self._pending:
            return False
        return self._closed or self._at_eof

    @property
    def closed(self) -> bool:
        return self._closed

    def creation_site(self) -> tuple[str, int] | None:
        return self.meta.creation_site if self.meta else None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _until(self, pattern: Any, timeout: Any, op: str) -> bytes:
        pat = _pattern(pattern, f"{self.NAME}:{op}")
        t = parse_duration(timeout, f"{self.NAME}:{op} timeout", allow_none=True)
        t = self.UNTIL_DEFAULT if t is None else t
        if self._closed:
            raise StreamClosed(self.MSG_CLOSED)
        if not pat:
            return b""
        acc = self._pending
        self._pending = b""
        searched = 0
        deadline = time.monotonic() + t
        while True:
            i = acc.find(pat, max(0, searched - len(pat) + 1))
            if i >= 0:
                end = i + len(pat)
                self._pending = acc[end:]
                return acc[:end]
            searched = len(acc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._pending = acc  # nothing read is ever dropped
                raise StreamTimeout(self.MSG_TIMEOUT.format(op=op, pat=_show(pat)) + _seen(acc))
            if self._at_eof:
                self._pending = acc
                raise StreamEof(self.MSG_EOF.format(op=op, pat=_show(pat)))
            try:
                got = self._read(remaining)
            except BaseException:
                self._pending = acc
                raise
            if got is None:
                self._at_eof = True
                self._pending = acc
                raise StreamEof(self.MSG_EOF.format(op=op, pat=_show(pat)))
            if got is not TIMEOUT and got:
                acc += got


@python_names
class Tail(Stream):
    """A stream fed by one agent channel: `vm.tail_file`, `vm.fd_stream`,
    `file.tail_stream`, `proc.stdout_stream` / `stderr_stream`."""

    NAME = "tail"

    def __init__(self, vm: "VM", mux: MuxStream, meta: ResourceMeta, what: str) -> None:
        super().__init__(meta)
        self._vm = vm
        self._mux = mux
        self._what = what  # for errors, e.g. "tail_file `/var/log/x`"
        self._token = vm._registry.add_stream(meta)
        # Dropped without close(): deregister and tell the agent to stop.
        self._finalizer = weakref.finalize(self, _release, vm, self._token, mux)

    def _read(self, timeout: float | None) -> Any:
        try:
            chunk = self._vm._session.run(self._mux.read(timeout))
        except ClientError as exc:
            self._at_eof = True
            self._vm._stream_lost(exc)
            return None
        if chunk is None:
            end = self._mux.end
            if end is not None and end.reason == "error" and end.error is not None:
                self._at_eof = True

                raise os_error(f"{self._what}", end.error)
            return None
        if chunk == b"":
            return TIMEOUT
        return chunk

    def _close_source(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        meta = self.meta
        what = f"{meta.kind}({meta.detail})" if meta is not None else "stream"
        return f"tail({what}{', closed' if self._closed else ''})"


def _release(vm: "VM", token: int, mux: MuxStream) -> None:
    vm._registry.remove_stream(token)
    if not mux.closed:
        session = vm._session
        session.call_soon(lambda: session.background(mux.close()))

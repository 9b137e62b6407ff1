"""The guest's serial console, host side: `vm:console()`.

The VMM keeps two things per VM (see `vmm/qemu/argv.py`): a log file with every
byte the guest wrote to its serial port since the first byte of boot, and a
bidirectional unix socket (QEMU's `console` chardev).

* `read_log` and `expect` read the log file, so they see early boot too.
* `read()` streams and `write()` go through the socket.  QEMU's chardev
  serves one client at a time (a second connection waits in the listen queue
  until the first one leaves), so each VM gets one `ConsoleHub`: a single
  connection, owned by the VM and closed when it shuts down, whose reader fans
  the guest's output out to every open `ConsoleStream` and through which every
  `write` goes.  That way an open stream never blocks a write or another
  stream (the reference opens one connection per call, which deadlocks there).

A backend without a console (the local backend) has neither: `read_log` gives
"", `read` and `write` raise `ConsoleUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VmmError
from .pynames import python_names
from .errors import ArgumentError, StreamTimeout, VmError
from .registry import ResourceMeta
from .streams import TIMEOUT, Stream, _pattern, _show
from .values import parse_duration, type_name

if TYPE_CHECKING:
    from .vm import VM

EXPECT_DEFAULT = 30.0
LOG_POLL = 0.05  # the log is a plain file QEMU appends to: polled, there is no event for it
READ_CHUNK = 64 << 10
# A stream nobody reads must not hold the guest's whole output in memory: past this
# many bytes the oldest are dropped (a serial port rarely gets near it).
STREAM_BUFFER_MAX = 32 << 20
SEEN_IN_ERRORS = 300  # bytes of what did arrive, quoted in a timeout message


class ConsoleUnavailable(VmError, VmmError):
    """The VMM has no console socket for this VM (the local backend, or not booted)."""

    def __init__(self, message: str, errno_: int = errno.ENOTSUP) -> None:
        self.errno = errno_
        super().__init__(message)


class ConsoleIOError(VmError, VmmError):
    """Connecting or writing to the console socket failed."""


def quote_seen(data: bytes, limit: int = SEEN_IN_ERRORS) -> str:
    """The last `limit` bytes of `data`, escaped on one line, for error messages."""
    tail = data[-limit:]
    text = tail.decode("utf-8", "replace").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return ("..." if len(data) > limit else "") + f'"{text}"'


class _Subscriber:
    """One stream's inbox on the hub.  Touched only on the session loop thread."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.event = asyncio.Event()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        over = len(self.buf) - STREAM_BUFFER_MAX
        if over > 0:
            del self.buf[:over]
            self.dropped += over
        self.event.set()

    def end(self) -> None:
        self.eof = True
        self.event.set()

    async def take(self, timeout: float) -> Any:
        """Up to READ_CHUNK bytes; None at end; TIMEOUT if nothing came in time."""
        if not self.buf and not self.eof:
            self.event.clear()
            try:
                # Event.wait consumes nothing, so a timeout can never lose bytes.
                await asyncio.wait_for(self.event.wait(), timeout)
            except TimeoutError:
                return TIMEOUT
        if self.buf:
            out = bytes(self.buf[:READ_CHUNK])
            del self.buf[:READ_CHUNK]
            return out
        return None


class ConsoleHub:
    """The one connection to a VM's console socket (see the module docstring)."""

    def __init__(self, instance: Any, path: Path) -> None:
        self.instance = instance
        self.path = path
        self._subs: set[_Subscriber] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()
        self.closed = False

    async def start(self) -> None:
        try:
            reader, self._writer = await asyncio.open_unix_connection(str(self.path))
        except OSError as exc:
            raise ConsoleIOError(f"connect console socket: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(self._pump(reader), name="console-hub")

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                for s in list(self._subs):
                    s.feed(data)
        except (ConnectionError, OSError):
            pass  # the VM went away: the same as end of stream
        finally:
            self.closed = True
            for s in list(self._subs):
                s.end()

    def subscribe(self) -> _Subscriber:
        s = _Subscriber()
        if self.closed:
            s.end()
        self._subs.add(s)
        return s

    def unsubscribe(self, s: _Subscriber) -> None:
        self._subs.discard(s)

    async def write(self, data: bytes, timeout: float | None) -> int:
        if self.closed or self._writer is None:
            raise ConsoleIOError("write console: the console connection is closed (the VM is gone)")
        async with self._write_lock:
            try:
                self._writer.write(data)
                if timeout:
                    await asyncio.wait_for(self._writer.drain(), timeout)
                else:
                    await self._writer.drain()
            except TimeoutError:
                raise ConsoleIOError(f"write console: the guest did not take {len(data)} byte(s) within "
                                     f"{timeout:g}s (is anything reading the serial port?)") from None
            except (ConnectionError, OSError) as exc:
                raise ConsoleIOError(f"write console: {exc}") from exc
        return len(data)

    async def aclose(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for s in list(self._subs):
            s.end()


async def _hub(vm: VM, method: str) -> ConsoleHub:
    """The VM's hub, connected on first use (runs on the session loop)."""
    inst = vm.instance
    path = getattr(inst, "console_socket", None) if inst is not None else None
    if path is None:
        if inst is None:
            raise ConsoleUnavailable(f"{method}: vm `{vm.name}` is not booted (no console yet)")
        if method == "console:write":
            raise ConsoleUnavailable("console:write needs a bidirectional chardev (QEMU only)")
        raise ConsoleUnavailable(f"{method}: VMM does not expose a console socket")
    hub = getattr(vm, "_console_hub", None)
    if hub is None or hub.closed or hub.instance is not inst:
        if hub is not None:
            await hub.aclose()
        hub = ConsoleHub(inst, Path(path))
        await hub.start()
        vm._console_hub = hub
    return hub


async def aclose_hub(vm: VM) -> None:
    """Close the VM's console connection (at shutdown); streams then see EOF."""
    hub = getattr(vm, "_console_hub", None)
    if hub is not None:
        vm._console_hub = None
        await hub.aclose()


@python_names
class Console:
    """`vm:console()`: the guest's serial console.  Creating one does nothing;
    the methods reach the VMM's log file and socket."""

    def __init__(self, vm: VM) -> None:
        self._vm = vm

    def __repr__(self) -> str:
        return f"console(vm {self._vm.name})"

    # ---- the log ---------------------------------------------------------------

    def read_log(self) -> bytes:
        """Everything the guest printed on its serial console since boot ("" without a console)."""
        return _log_from(self._vm, 0)

    def expect(self, pattern: Any, timeout: Any = None) -> str:
        """Wait until `pattern` (plain text, no regex) appears anywhere in the console
        log, including what was printed before the call; returns the pattern."""
        pat = _pattern(pattern, "console:expect")
        if not pat:
            raise ArgumentError("console:expect: pattern must not be empty")
        t = parse_duration(timeout, "console:expect timeout", allow_none=True)
        t = EXPECT_DEFAULT if t is None else t
        vm = self._vm
        inst = vm.instance
        if inst is not None and getattr(inst, "console_log", None) is None:
            raise ConsoleUnavailable(f"console:expect: the {getattr(inst, 'backend', '?')} backend keeps no "
                                     "console log (there is no guest serial console)")

        async def poll() -> tuple[bool, bytes]:
            seen = b""
            offset = 0
            deadline = time.monotonic() + t
            while True:
                chunk = _log_from(vm, offset)
                if chunk:
                    offset += len(chunk)
                    # Keep the tail of what was already searched, so a match
                    # spanning two reads is still found.
                    seen = seen[-(len(pat) - 1):] + chunk if len(pat) > 1 else chunk
                    if pat in seen:
                        return True, seen
                    seen = seen[-max(len(pat), SEEN_IN_ERRORS):]
                if time.monotonic() >= deadline:
                    return False, seen
                await asyncio.sleep(min(LOG_POLL, max(0.0, deadline - time.monotonic())))

        found, seen = vm.session.run(poll())
        if not found:
            raise StreamTimeout(f"console:expect timed out waiting for `{_show(pat)}` after {t:g}s "
                                f"(last console bytes: {quote_seen(seen)})")
        return _show(pat)

    # ---- the socket ------------------------------------------------------------

    def read(self) -> ConsoleStream:
        """A stream of what the guest prints from now on (see streams.md)."""
        vm = self._vm
        inst = vm.instance
        sock = getattr(inst, "console_socket", None) if inst is not None else None
        meta = vm._meta("console_read", f'"{sock}"' if sock else '""')
        hub = vm.session.run(_hub(vm, "console:read"))
        return ConsoleStream(vm, hub, meta)

    def write(self, data: Any, opts: Any = None, *, timeout: Any = None) -> int:
        """Send bytes to the guest's serial port input; returns how many were sent.
        `timeout` (or opts.timeout) bounds the wait for the guest to take them."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"console:write: data must be a string, got {type_name(data)}")
        if opts is not None:
            if not isinstance(opts, dict):
                raise ArgumentError(f"console:write: opts must be a table, got {type_name(opts)}")
            for k in opts:
                if k == "timeout_ms":
                    raise ArgumentError("console:write: opts.timeout_ms is not supported "
                                        '(use `timeout = "500ms"` or `timeout = 0.5`)')
                if k != "timeout":
                    raise ArgumentError(f"console:write: unknown option `{k}` (valid: timeout)")
            if timeout is None:
                timeout = opts.get("timeout")
        t = parse_duration(timeout, "console:write timeout", allow_none=True)
        payload = bytes(data)
        vm = self._vm

        async def send() -> int:
            hub = await _hub(vm, "console:write")
            return await hub.write(payload, t or None)

        return vm.session.run(send())

    def close(self) -> None:
        """Nothing to release: the console belongs to the VMM."""


def _log_from(vm: VM, offset: int) -> bytes:
    """Console log bytes from `offset` on; after shutdown, what the backend kept."""
    inst = vm.instance
    if inst is None:
        return b""
    path = getattr(inst, "console_log", None)
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        # The scratch directory is gone (VM shut down): the backend kept the tail.
        kept = inst.console_tail(1 << 62)
        return kept[offset:] if offset < len(kept) else b""


@python_names
class ConsoleStream(Stream):
    """`console:read()`: the guest's console output from the moment it was opened."""

    NAME = "console"
    NEXT_DEFAULT = 0.05  # a bare next() only looks (the reference's 50 ms socket timeout)
    MSG_TIMEOUT = "console:{op} timed out waiting for `{pat}`"
    MSG_EOF = "console EOF"
    MSG_CLOSED = "console closed"

    def __init__(self, vm: VM, hub: ConsoleHub, meta: ResourceMeta) -> None:
        super().__init__(meta)
        self._vm = vm
        self._hub = hub
        self._sub = vm.session.run(_subscribe(hub))
        token = vm._registry.add_stream(meta)
        self._finalizer = weakref.finalize(self, _release, vm, token, hub, self._sub)

    def _read(self, timeout: float | None) -> Any:
        t = max(0.001, timeout if timeout is not None else self.NEXT_DEFAULT)
        return self._vm.session.run(self._sub.take(t))

    def _close_source(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        return "console_stream"


async def _subscribe(hub: ConsoleHub) -> _Subscriber:
    return hub.subscribe()


def _release(vm: VM, token: int, hub: ConsoleHub, sub: _Subscriber) -> None:
    vm._registry.remove_stream(token)
    vm.session.call_soon(hub.unsubscribe, sub)


# ---- console lines in failure messages ----------------------------------------------

_ESCAPES = re.compile(rb"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1bc")
FAILURE_LINES = 20
FAILURE_BYTES = 2048


def last_lines(data: bytes, max_lines: int = FAILURE_LINES, max_bytes: int = FAILURE_BYTES) -> str:
    """The last lines of console output, for a person reading a failure: at most
    `max_lines` lines from the last `max_bytes` bytes, terminal escapes and
    carriage returns removed, blank lines dropped."""
    tail = data[-max_bytes:]
    cut = len(data) > max_bytes
    text = _ESCAPES.sub(b"", tail).replace(b"\r", b"").decode("utf-8", "replace")
    lines = text.split("\n")
    if cut and len(lines) > 1:
        lines = lines[1:]  # the first one is a fragment
    lines = [ln.rstrip() for ln in lines if ln.strip()]
    return "\n".join(lines[-max_lines:])


def failure_block(vm_name: str, data: bytes) -> str:
    """`--- console of vm NAME (last lines) ---` + the lines, or "" if it printed nothing."""
    text = last_lines(data)
    if not text:
        return ""
    return f"--- console of vm `{vm_name}` (last lines) ---\n{text}\n--- end of console ---"

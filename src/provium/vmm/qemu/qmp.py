"""QMP through the `qemu.qmp` library, plus an event log with marks.

Every event QEMU sends is appended to one log.  A caller that is about to
trigger something takes `mark()` first and then `wait_event(names, mark)`
looks only at events after it, so an old RESET or SHUTDOWN can never satisfy
a new wait.

The library logs to `qemu.qmp.protocol.<name>`; each VM's records go to its
own `qmp.log` (kept with the VM's evidence when a file fails) instead of the
terminal, where every VM's normal end (QEMU closing QMP as it quits) would
show up as an error.  Only this VM's child logger is redirected: the library's
logging stays as its user configured it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any, Callable, Iterable

from qemu.qmp import EventListener, QMPClient, QMPError

from ..base import VmmError

COMMAND_TIMEOUT = 30.0



class QmpError(VmmError):
    pass


class _Log(EventListener):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.changed = asyncio.Event()
        self.watchers: list[Callable[[dict], None]] = []

    async def put(self, event: Any) -> None:  # called by QMPClient for every event
        ev = dict(event)
        self.events.append(ev)
        self.changed.set()
        for watch in self.watchers:
            watch(ev)


class Qmp:
    def __init__(self, name: str, log_path: Path | None = None) -> None:
        self._client = QMPClient(name)
        self._handler: logging.Handler | None = None
        if log_path is not None:
            logger = logging.getLogger("qemu.qmp.protocol").getChild(name)
            self._handler = logging.FileHandler(log_path, delay=True)
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
            logger.addHandler(self._handler)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
        self._log = _Log()
        self._client.register_listener(self._log)
        self.name = name

    async def connect(self, sock: socket.socket, timeout: float) -> None:
        """Speak QMP over our end of a socketpair whose other end is QEMU's monitor
        (`-chardev socket,fd=N`, see argv.py).  Nothing to wait for and nothing to
        retry: there is no socket file to appear, the greeting arrives as soon as
        QEMU's main loop runs, and a QEMU that dies first closes its end, which
        fails the connect at once.  The socket is ours to close until the library
        has taken it (it closes it on disconnect)."""
        try:
            await asyncio.wait_for(self._client.connect(sock), timeout)
        except asyncio.TimeoutError:
            await self._abandon(sock)
            raise QmpError(f"QMP: no greeting from QEMU within {timeout:g}s") from None
        except (QMPError, OSError, EOFError) as exc:
            await self._abandon(sock)
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise QmpError(f"QMP: connection failed ({str(cause) or type(cause).__name__})") from exc

    async def _abandon(self, sock: socket.socket) -> None:
        try:
            await self._client.disconnect()
        except Exception:  # noqa: BLE001, S110 - already broken; the socket is closed below
            pass
        sock.close()

    async def execute(self, cmd: str, args: dict | None = None, timeout: float = COMMAND_TIMEOUT) -> Any:
        try:
            return await asyncio.wait_for(self._client.execute(cmd, args), timeout)
        except asyncio.TimeoutError:
            raise QmpError(f"QMP `{cmd}`: no answer within {timeout:g}s") from None
        except QMPError as exc:
            raise QmpError(f"QMP `{cmd}` failed: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise QmpError(f"QMP `{cmd}`: connection lost ({exc})") from exc

    def watch(self, callback: Callable[[dict], None]) -> None:
        """Call `callback(event)` on the loop for every event from now on (it must not block)."""
        self._log.watchers.append(callback)

    def mark(self) -> int:
        return len(self._log.events)

    async def wait_event(self, names: Iterable[str], mark: int, timeout: float) -> dict | None:
        """First event named in `names` logged after `mark`, or None after `timeout`."""
        wanted = set(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pos = mark
        while True:
            self._log.changed.clear()  # before scanning: an event logged after the scan wakes us
            while pos < len(self._log.events):
                ev = self._log.events[pos]
                pos += 1
                if ev.get("event") in wanted:
                    return ev
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._log.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def events_since(self, mark: int) -> list[dict]:
        return list(self._log.events[mark:])

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._client.disconnect(), 2.0)
        except Exception:
            pass
        if self._handler is not None:
            logging.getLogger("qemu.qmp.protocol").getChild(self.name).removeHandler(self._handler)
            self._handler.close()
            self._handler = None

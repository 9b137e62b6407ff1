"""One request's channel: its reply, its cancellation, and (for streams) its credit.

Every op runs on its own thread with a `Channel` as its context.  The host may
cancel a channel at any time (it stopped listening); the op then stops what it
can and its late reply is dropped.  A stream channel may only have `WINDOW`
bytes of `stream_frame` data unacknowledged: the op waits for `credit` when the
window is spent, so a slow host bounds the agent's memory instead of the other
way round.
"""

from __future__ import annotations

import os
import threading
TYPE_CHECKING = False  # typing stays out of the agent's start
if TYPE_CHECKING:
    from typing import Any

from provium.protocol.framing import BLOB_MIN, STREAM_WINDOW, Blob

if TYPE_CHECKING:
    from provium.protocol.ops_streams import StreamEnd

    from .state import AgentState

WINDOW = STREAM_WINDOW
_MAKE_COND = threading.Lock()


class Channel:
    def __init__(self, session: Any, ch: int, state: "AgentState") -> None:
        self.session = session  # anything with send(ch, kind, payload) -> bool
        self.ch = ch
        self.state = state
        self.cancelled = False
        self.window = WINDOW
        # Made on first need: most requests are short and never wait on it.
        self._cond_obj: threading.Condition | None = None
        self._efd: int | None = None  # cancel_fd()

    @property
    def _cond(self) -> threading.Condition:
        cond = self._cond_obj
        if cond is None:
            with _MAKE_COND:
                if self._cond_obj is None:
                    self._cond_obj = threading.Condition()
                cond = self._cond_obj
        return cond

    # ---- control from the reader loop ------------------------------------------

    def cancel_fd(self) -> int:
        """A descriptor that polls readable once the channel is cancelled (made on
        first need; closed by `close()`), so a loop that already polls descriptors
        learns of a cancel by an event instead of by waking up to look."""
        efd = self._efd
        if efd is None:
            efd = self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            if self.cancelled:  # cancel() may have run before _efd was set
                os.eventfd_write(efd, 1)
        return efd

    def close(self) -> None:
        efd, self._efd = self._efd, None
        if efd is not None:
            os.close(efd)

    def cancel(self) -> None:
        self.cancelled = True  # set first: a waiter that makes the condition later sees it
        efd = self._efd
        if efd is not None:
            try:
                os.eventfd_write(efd, 1)
            except OSError:  # closed meanwhile: the op has ended
                pass
        cond = self._cond_obj
        if cond is not None:
            with cond:
                cond.notify_all()

    def credit(self, n: int) -> None:
        if n <= 0:
            return
        with self._cond:
            self.window += n
            self._cond.notify_all()

    # ---- used by ops ---------------------------------------------------------------

    def sleep(self, seconds: float) -> bool:
        """Sleep unless cancelled first.  True when the full time passed."""
        with self._cond:
            if not self.cancelled and seconds > 0:
                self._cond.wait_for(lambda: self.cancelled, seconds)
            return not self.cancelled

    def reserve(self, want: int) -> int:
        """Block until some window is free; how many bytes may be sent (0 = cancelled)."""
        with self._cond:
            self._cond.wait_for(lambda: self.cancelled or self.window > 0)
            if self.cancelled:
                return 0
            return min(want, self.window)

    def reply(self, kind: str, payload: Any, fds: Any = ()) -> bool:
        if self.cancelled:
            return False
        return self._send(kind, payload, fds)

    def frame(self, data: "bytes | memoryview | Blob") -> bool:
        """Send one stream_frame (the caller reserved its size).  False = stop streaming.

        `data` may be a Blob of several buffers (a command's output chunks): they
        go out as one frame without being joined."""
        size = len(data)
        with self._cond:
            if self.cancelled:
                return False
            self.window -= size
        if size < BLOB_MIN:
            data = bytes(data)
        elif not isinstance(data, Blob):
            data = Blob(data)
        # Only streams send frames: their family (and these types) loaded with their first op.
        from provium.protocol.ops_streams import StreamFrame

        return self._send(StreamFrame.KIND, StreamFrame(data))  # type: ignore[arg-type]

    def end(self, end: StreamEnd) -> bool:
        return self.reply("stream_end", end)

    def _send(self, kind: str, payload: Any, fds: Any = ()) -> bool:
        if not (self.session.send(self.ch, kind, payload, fds) if fds else self.session.send(self.ch, kind, payload)):
            self.cancel()
            return False
        return True


class Detached(Channel):
    """A context for ops run outside any connection (they can never be cancelled)."""

    cancel_fd = None  # type: ignore[assignment]  # never cancelled: nothing to wait for

    def __init__(self, state: "AgentState") -> None:
        super().__init__(None, 0, state)

    def _send(self, kind: str, payload: Any, fds: Any = ()) -> bool:
        return False

"""Stream ops: tail_file, fd_stream, proc_stream.

Each opener checks its source and returns the ack plus a pump; the pump pushes
`stream_frame`s of at most CHUNK bytes (and never more than the channel's credit
window allows) until the source ends (`stream_end`) or the host cancels.
"""

from __future__ import annotations

import os

from provium.protocol.framing import STREAM_WINDOW, Blob
from provium.protocol.core import OpResult
from provium.protocol.ops_streams import ProcStreamChannel, StreamEnd

from .base import os_fail

CHUNK = 64 * 1024
# A process's output is already in memory (children.OutputBuffer): it goes out
# in larger frames, a quarter of the credit window, so a chatty command costs
# fewer frames (and host round trips to read them) while four stay in flight.
PROC_CHUNK = STREAM_WINDOW // 4
IDLE_POLL = 0.05  # how often an idle source is looked at again
EBADF = 9
EOF = StreamEnd("eof")


def _error_end(op: str, exc: OSError) -> StreamEnd:
    res = os_fail(op, exc)
    return StreamEnd("error", res.value)


# ---- tail_file --------------------------------------------------------------------


def open_tail(ctx, op):
    try:
        fd = os.open(op.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return os_fail("tail_file", exc, op.path), None
    try:
        start = op.start
        if start.kind == "beginning":
            os.lseek(fd, 0, os.SEEK_SET)
        elif start.kind == "end":
            os.lseek(fd, 0, os.SEEK_END)
        else:
            os.lseek(fd, max(0, start.value), os.SEEK_SET)
    except (OSError, OverflowError) as exc:
        os.close(fd)
        if isinstance(exc, OverflowError):
            return OpResult.failure(22, f"tail_file: {op.path}: offset {start.value} is out of range"), None
        return os_fail("tail_file", exc, op.path), None

    def pump(ctx) -> None:
        try:
            _tail(ctx, fd, op.path)
        finally:
            os.close(fd)

    return OpResult.success(None), pump


def _tail(ctx, fd: int, path: str) -> None:
    while True:
        n = ctx.reserve(CHUNK)
        if n == 0:
            return  # cancelled
        try:
            data = os.read(fd, n)
        except OSError as exc:
            ctx.end(_error_end(f"tail_file: {path}", exc))
            return
        if data:
            if not ctx.frame(data):
                return
            continue
        # At the end for now.  A file cut shorter than what we already sent
        # (truncated, rotated in place) ends the stream instead of hanging.
        try:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            if os.fstat(fd).st_size < pos:
                ctx.end(EOF)
                return
        except OSError as exc:
            ctx.end(_error_end(f"tail_file: {path}", exc))
            return
        if not ctx.sleep(IDLE_POLL):
            return


# ---- fd_stream --------------------------------------------------------------------


def open_fd_stream(ctx, op):
    entry = ctx.state.get(ctx.state.files, op.handle)
    if entry is None:
        return OpResult.failure(EBADF, f"fd_stream: file#{op.handle} is not an open file handle"), None
    try:
        # Our own descriptor for the same open file (same position): closing the
        # handle meanwhile cannot pull the fd out from under this reader.
        fd = os.dup(entry.fd)
    except OSError as exc:
        return os_fail("fd_stream", exc, entry.path), None

    def pump(ctx) -> None:
        try:
            _fd_stream(ctx, fd, op.handle, entry)
        finally:
            os.close(fd)

    return OpResult.success(None), pump


def _fd_stream(ctx, fd: int, handle: int, entry) -> None:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        if ctx.state.get(ctx.state.files, handle) is not entry:
            ctx.end(EOF)  # the handle was closed: nothing more will come through it
            return
        n = ctx.reserve(CHUNK)
        if n == 0:
            return
        # A pipe or device may have nothing yet: wait briefly instead of
        # blocking in read(), so closing the handle or cancelling is noticed.
        if not poller.poll(int(IDLE_POLL * 1000)):
            continue
        try:
            data = os.read(fd, n)
        except BlockingIOError:
            data = None
        except OSError as exc:
            ctx.end(_error_end(f"fd_stream: file#{handle}", exc))
            return
        if data:
            if not ctx.frame(data):
                return
        elif not ctx.sleep(IDLE_POLL):  # at the end for now; more may be appended
            return


# ---- proc_stream ------------------------------------------------------------------


def open_proc_stream(ctx, op):
    if op.handle in ctx.state.worker_procs:
        from .workers import open_proc_stream as relay

        return relay(ctx, op)
    proc = ctx.state.get(ctx.state.procs, op.handle)
    if proc is None:
        return OpResult.failure(
            EBADF,
            f"proc_stream: proc#{op.handle} is not a running process (already waited on, or never "
            "issued); open streams BEFORE proc:wait",
        ), None
    buf = proc.out if op.channel is ProcStreamChannel.STDOUT else proc.err

    def pump(ctx) -> None:
        pos = 0  # every reader replays the output from the first byte
        while True:
            n = ctx.reserve(PROC_CHUNK)
            if n == 0:
                return
            # Look at "finished" BEFORE reading: output appended between an empty read
            # and the check would otherwise be dropped by ending the stream.
            finished = buf.done or ctx.state.get(ctx.state.procs, op.handle) is not proc
            parts = buf.read(pos, n)  # views of the output: no copy
            if parts:
                data = parts[0] if len(parts) == 1 else Blob(parts)
                pos += len(data)
                if not ctx.frame(data):
                    return
                continue
            if finished:
                # Drained, or waited on (wait already collected what the pipe gave).
                ctx.end(EOF)
                return
            buf.wait_past(pos, IDLE_POLL)
            if ctx.cancelled:
                return

    return OpResult.success(None), pump


OPENERS = {"tail_file": open_tail, "fd_stream": open_fd_stream, "proc_stream": open_proc_stream}

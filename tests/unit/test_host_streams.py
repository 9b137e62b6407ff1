"""The shared stream logic (pending buffer, matching, deadlines) over a scripted source."""

import threading
import time

import pytest

from provium.host.errors import ArgumentError, StreamClosed, StreamEof, StreamTimeout
from provium.host.streams import TIMEOUT, Stream


class Scripted(Stream):
    """Delivers queued chunks; blocks up to the timeout when the queue is empty."""

    def __init__(self, chunks=(), eof_after=False):
        super().__init__()
        self.queue = list(chunks)
        self.eof_after = eof_after
        self.cond = threading.Condition()
        self.reads = 0
        self.source_closed = False

    def push(self, data):
        with self.cond:
            self.queue.append(data)
            self.cond.notify_all()

    def _read(self, timeout):
        self.reads += 1
        with self.cond:
            if not self.queue:
                if self.eof_after:
                    return None
                self.cond.wait(timeout)
            if not self.queue:
                return TIMEOUT
            return self.queue.pop(0)

    def _close_source(self):
        self.source_closed = True


def test_read_until_keeps_leftover_for_next_reads():
    s = Scripted([b"hello wor", b"ld\nnext line\n"])
    assert s.read_until("world", 1) == b"hello world"
    assert s.next(0.01) == b"\nnext line\n"  # the leftover, as one chunk
    assert s.next(0.01) is None


def test_consecutive_expects_see_each_others_leftovers():
    s = Scripted([b"a1 b2 c3"])
    s.expect("a1", 1)
    s.expect("b2", 1)
    assert s.read_until("3", 1) == b" c3"


def test_pattern_split_across_chunks():
    s = Scripted([b"..RE", b"A", b"DY.."])
    assert s.read_until(b"READY", 1) == b"..READY"
    assert not s.eof()  # ".." is pending


def test_timeout_keeps_data_and_names_pattern():
    s = Scripted([b"partial"])
    t0 = time.monotonic()
    with pytest.raises(StreamTimeout) as ei:
        s.read_until("never", 0.1)
    assert time.monotonic() - t0 >= 0.09
    assert str(ei.value) == "read_until timed out waiting for `never` (7 bytes arrived; 'partial')"
    with pytest.raises(StreamTimeout, match="expect timed out waiting for `x`"):
        s.expect("x", 0.01)
    assert s.next(0.01) == b"partial"  # nothing was dropped


def test_eof_during_read_until_and_eof_flag():
    s = Scripted([b"abc"], eof_after=True)
    with pytest.raises(StreamEof, match="stream EOF"):
        s.read_until("zzz", 1)
    assert not s.eof()  # "abc" still pending
    assert s.next() == b"abc"
    assert s.eof()
    assert s.next() is None


def test_empty_pattern_matches_immediately():
    s = Scripted()
    assert s.read_until("", 5) == b""
    assert s.reads == 0


def test_drain_collects_pending_then_chunks_until_quiet():
    s = Scripted([b"1", b"2"])
    s.expect("1", 1)
    s.push(b"3")
    t0 = time.monotonic()
    out = s.drain(0.2)
    assert out == [b"2", b"3"]
    assert time.monotonic() - t0 < 1
    assert s.drain(0.05) == []


def test_close_drops_pending_and_is_idempotent():
    s = Scripted([b"abc"])
    s.expect("a", 1)
    s.close()
    s.close()
    assert s.source_closed and s.eof() and s.closed
    assert s.next() is None
    assert s.drain() == []
    with pytest.raises(StreamClosed, match="stream closed"):
        s.read_until("b", 1)
    with pytest.raises(StreamClosed):
        s.expect("b", 1)


def test_next_default_timeout_waits_for_data_from_another_thread():
    s = Scripted()
    threading.Timer(0.05, s.push, args=(b"late",)).start()
    assert s.next() == b"late"


def test_bad_arguments():
    s = Scripted()
    with pytest.raises(ArgumentError, match="pattern must be a string, got number"):
        s.read_until(5, 1)
    with pytest.raises(ArgumentError, match="cannot parse `soon`"):
        s.next("soon")
    with pytest.raises(ArgumentError, match="non-negative"):
        s.drain(-1)


def test_subclass_messages_and_defaults():
    class Console(Scripted):
        NAME = "console"
        MSG_TIMEOUT = "console:{op} timed out waiting for {pat}"
        MSG_EOF = "console EOF"
        UNTIL_DEFAULT = 0.05

    c = Console()
    with pytest.raises(StreamTimeout, match="Console.expect timed out waiting for login"):
        c.expect("login")


def test_timeout_message_shows_what_arrived_or_that_nothing_did():
    with pytest.raises(StreamTimeout, match=r"waiting for `x` \(nothing arrived\)$"):
        Scripted([]).read_until("x", 0.01)
    long = Scripted([b"a" * 300 + b"END"])
    with pytest.raises(StreamTimeout) as ei:
        long.read_until("never", 0.05)
    assert str(ei.value).endswith(f"(303 bytes arrived; last '{'a' * 197}END')")

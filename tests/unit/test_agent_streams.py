"""tail_file and fd_stream against the real agent subprocess."""

from __future__ import annotations

import os
import time


from provium.protocol.messages import CloseArgs, FdStreamArgs, OpenFileArgs, ReadArgs, TailFileArgs
from provium.protocol.types import OpenMode, TailStart


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_tail_from_the_beginning_replays_then_follows(agent, tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"existing\n")
    ch, ack = agent.open_stream(TailFileArgs(str(path), TailStart("beginning")))
    assert ack.ok
    assert agent.read_stream(ch, 9)[0] == b"existing\n"
    append(path, b"appended\n")
    assert agent.read_stream(ch, 9)[0] == b"appended\n"
    agent.send(ch, "cancel")
    # The cancel travels while the tail keeps polling: give the agent time to act on it
    # (under load a write right behind the cancel could be read before it was handled).
    time.sleep(0.5)
    append(path, b"after cancel\n")
    agent.recv_none(ch, 0.25)


def test_tail_from_the_end_skips_what_is_there(agent, tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"old stuff\n")
    ch, ack = agent.open_stream(TailFileArgs(str(path)))  # default start: end
    assert ack.ok
    agent.recv_none(ch, 0.15)
    append(path, b"new\n")
    assert agent.read_stream(ch, 4)[0] == b"new\n"
    agent.send(ch, "cancel")


def test_tail_from_an_offset(agent, tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    ch, ack = agent.open_stream(TailFileArgs(str(path), TailStart("offset", 4)))
    assert ack.ok
    assert agent.read_stream(ch, 6)[0] == b"456789"
    append(path, b"ab")
    assert agent.read_stream(ch, 2)[0] == b"ab"
    agent.send(ch, "cancel")


def test_tail_of_a_missing_file_is_an_errno_2_ack(agent, tmp_path):
    ch, ack = agent.open_stream(TailFileArgs(str(tmp_path / "missing")))
    assert not ack.ok and ack.value.errno == 2
    agent.recv_none(ch, 0.1)


def test_tail_ends_when_the_file_shrinks_below_the_position(agent, tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"x" * 100)
    ch, ack = agent.open_stream(TailFileArgs(str(path), TailStart("beginning")))
    assert agent.read_stream(ch, 100)[0] == b"x" * 100
    with open(path, "r+b") as f:
        f.truncate(10)
    data, end = agent.read_stream(ch)
    assert data == b"" and end.reason == "eof"


def test_tail_chunks_are_at_most_64_kib(agent, tmp_path):
    path = tmp_path / "big"
    blob = os.urandom(300_000)
    path.write_bytes(blob)
    ch, ack = agent.open_stream(TailFileArgs(str(path), TailStart("beginning")))
    got = bytearray()
    while len(got) < len(blob):
        env = agent.recv(ch)
        assert env.kind == "stream_frame" and 0 < len(env.data.data) <= 64 * 1024
        got += env.data.data
    assert bytes(got) == blob
    agent.send(ch, "cancel")


def test_tail_of_a_directory_ends_with_an_error(agent, tmp_path):
    ch, ack = agent.open_stream(TailFileArgs(str(tmp_path), TailStart("beginning")))
    assert ack.ok  # opening a directory read-only works; reading it does not
    data, end = agent.read_stream(ch)
    assert end.reason == "error" and end.error.errno == 21


def test_fd_stream_reads_the_handle_until_it_is_closed(agent, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    h = agent.value(OpenFileArgs(str(path), OpenMode(read=True)))
    assert agent.value(ReadArgs(h, 3)).data == b"012"
    ch, ack = agent.open_stream(FdStreamArgs(h))
    assert ack.ok
    assert agent.read_stream(ch, 7)[0] == b"3456789"  # from the handle's position
    append(path, b"more")
    assert agent.read_stream(ch, 4)[0] == b"more"
    time.sleep(0.1)
    agent.value(CloseArgs(h))
    data, end = agent.read_stream(ch)
    assert data == b"" and end.reason == "eof"


def test_fd_stream_of_a_fifo(agent, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # O_RDWR on a FIFO does not block for a writer (Linux).
    h = agent.value(OpenFileArgs(str(fifo), OpenMode(read=True, write=True)))
    ch, ack = agent.open_stream(FdStreamArgs(h))
    assert ack.ok
    with open(fifo, "wb") as w:
        w.write(b"through the pipe")
    assert agent.read_stream(ch, 16)[0] == b"through the pipe"
    agent.value(CloseArgs(h))
    assert agent.read_stream(ch)[1].reason == "eof"


def test_fd_stream_of_an_unknown_handle_is_ebadf(agent):
    ch, ack = agent.open_stream(FdStreamArgs(424242))
    assert not ack.ok and ack.value.errno == 9 and "424242" in ack.value.message

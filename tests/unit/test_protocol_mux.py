"""The host-side channel multiplexer (protocol/mux.py) against a scripted fake agent.

The fake agent below is in-memory: a scripted peer that speaks the real framing and envelope over a socketpair, records every frame
the host sends (including `cancel` and `credit`), and lets each test decide
how (and when) to answer.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Awaitable, Callable

import pytest

from provium.protocol import encode_frame
from provium.protocol.envelope import Envelope, decode_host
from provium.protocol.framing import CleanEof, FrameError, async_read_frame_body, unpack
from provium.protocol.messages import PROTOCOL_VERSION, HelloErr, HelloOk, StreamFrame
from provium.protocol.mux import MuxClient
from provium.protocol.types import AgentInfo

Handler = Callable[["FakeAgent", Envelope], Awaitable[None]]


class FakeAgent:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 version: int = PROTOCOL_VERSION, handler: Handler | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.version = version
        self.handler = handler
        self.received: list[Envelope] = []
        self.credit: dict[int, int] = {}
        self.cancelled: set[int] = set()
        self.credit_event = asyncio.Event()
        self.got = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._serve())
        self._tasks: set[asyncio.Task] = set()

    async def send(self, ch: int, kind: str, data: Any = None) -> None:
        self.writer.write(encode_frame(Envelope(ch, kind, data).to_wire()))
        await self.writer.drain()

    async def send_raw(self, payload: bytes) -> None:
        self.writer.write(payload)
        await self.writer.drain()

    async def frame(self, ch: int, data: bytes) -> None:
        await self.send(ch, "stream_frame", StreamFrame(data))

    async def _serve(self) -> None:
        try:
            while True:
                env = decode_host(unpack(await async_read_frame_body(self.reader)))
                self.received.append(env)
                self.got.set()
                if env.kind == "hello":
                    if env.data.protocol_version != self.version:
                        await self.send(env.ch, "hello_err", HelloErr(env.data.protocol_version, self.version))
                    else:
                        await self.send(env.ch, "hello_ok", HelloOk(self.version, AgentInfo("linux", "fake", None, [])))
                elif env.kind == "credit":
                    self.credit[env.ch] = self.credit.get(env.ch, 0) + env.data.bytes
                    self.credit_event.set()
                elif env.kind == "cancel":
                    self.cancelled.add(env.ch)
                elif self.handler is not None:
                    t = asyncio.get_running_loop().create_task(self.handler(self, env))
                    self._tasks.add(t)
                    t.add_done_callback(self._tasks.discard)
        except (CleanEof, FrameError, ConnectionError, asyncio.CancelledError):
            pass

    def kinds(self) -> list[str]:
        return [e.kind for e in self.received]

    async def close(self) -> None:
        self._task.cancel()
        for t in list(self._tasks):
            t.cancel()
        try:
            self.writer.close()
        except Exception:
            pass


async def pair(handler: Handler | None = None, *, version: int = PROTOCOL_VERSION,
               connect: bool = True) -> tuple[MuxClient | tuple, FakeAgent]:
    """(connected MuxClient, agent); with connect=False the host's socket instead.

    The client reads through `wire.FrameProtocol`, as the backends' clients do."""
    a, b = socket.socketpair()
    ar, aw = await asyncio.open_connection(sock=a)
    agent = FakeAgent(ar, aw, version=version, handler=handler)
    if not connect:
        return b, agent
    client = await MuxClient.connect(b, timeout=5)
    return client, agent


# ---- tests -----------------------------------------------------------------------------

from provium.protocol.messages import (
    DataOk,
    GetTimeArgs,
    ReadFileArgs,
    TailFileArgs,
    TimeOk,
)
from provium.protocol.mux import (
    STREAM_WINDOW,
    AgentFailure,
    ConnectionLost,
    FrameClientError,
    UnexpectedMessage,
    VersionMismatch,
)
from provium.protocol.types import AgentError, AgentErrorKind, OpResult, OsError, StreamEnd


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_hello_records_agent_info():
    async def go():
        client, agent = await pair()
        assert client.agent_info.agent_version == "fake"
        assert agent.kinds() == ["hello"] and agent.received[0].ch == 0
        await client.close()
        await agent.close()

    arun(go())


def test_version_mismatch_names_both_versions():
    async def go():
        sock, agent = await pair(version=3, connect=False)
        with pytest.raises(VersionMismatch) as ei:
            await MuxClient.connect(sock, version=5, timeout=5)
        assert "host: 5" in str(ei.value) and "agent: 3" in str(ei.value)
        assert (ei.value.host, ei.value.agent) == (5, 3)
        await agent.close()

    arun(go())


def test_replies_are_routed_by_channel_even_out_of_order():
    release = {}

    async def handler(agent, env):
        # Hold every request until the test lets it go, so replies cross.
        ev = release.setdefault(env.ch, asyncio.Event())
        await ev.wait()
        await agent.send(env.ch, "get_time_result", OpResult.success(TimeOk(env.ch * 1000)))

    async def go():
        client, agent = await pair(handler)
        t1 = asyncio.ensure_future(client.call(GetTimeArgs()))
        t2 = asyncio.ensure_future(client.call(GetTimeArgs()))
        t3 = asyncio.ensure_future(client.call(GetTimeArgs()))
        while len([e for e in agent.received if e.kind == "get_time"]) < 3:
            await asyncio.sleep(0.005)
        chans = [e.ch for e in agent.received if e.kind == "get_time"]
        assert len(set(chans)) == 3 and 0 not in chans
        for ch in reversed(chans):  # answer the last request first
            release.setdefault(ch, asyncio.Event()).set()
            await asyncio.sleep(0.01)
        results = [(await t).value.ns for t in (t1, t2, t3)]
        assert results == [ch * 1000 for ch in chans]
        await client.close()
        await agent.close()

    arun(go())


def test_agent_error_reply_raises_agent_failure():
    async def handler(agent, env):
        await agent.send(env.ch, "agent_error", AgentError(AgentErrorKind.UNKNOWN_HANDLE, "unknown handle 99999"))

    async def go():
        client, agent = await pair(handler)
        with pytest.raises(AgentFailure) as ei:
            await client.call(ReadFileArgs("/x"))
        assert "agent error" in str(ei.value) and "99999" in str(ei.value)
        assert ei.value.kind == "unknown_handle"
        # The connection is still usable.
        assert client.lost is None
        await client.close()
        await agent.close()

    arun(go())


def test_wrong_reply_kind_is_unexpected_message():
    async def handler(agent, env):
        await agent.send(env.ch, "stat_result", OpResult.failure(2, "nope"))

    async def go():
        client, agent = await pair(handler)
        with pytest.raises(UnexpectedMessage) as ei:
            await client.call(ReadFileArgs("/x"))
        assert "read_file_result" in str(ei.value) and "stat_result" in str(ei.value)
        await client.close()
        await agent.close()

    arun(go())


def test_timeout_sends_cancel_and_late_reply_is_dropped():
    async def handler(agent, env):
        if env.data.path == "/slow":
            await asyncio.sleep(0.3)  # answers after the host gave up
        await agent.send(env.ch, "read_file_result", OpResult.success(DataOk(env.data.path.encode())))

    async def go():
        client, agent = await pair(handler)
        with pytest.raises(asyncio.TimeoutError):
            await client.call(ReadFileArgs("/slow"), timeout=0.05)
        slow_ch = [e.ch for e in agent.received if e.kind == "read_file"][0]
        for _ in range(100):
            if slow_ch in agent.cancelled:
                break
            await asyncio.sleep(0.01)
        assert slow_ch in agent.cancelled
        await asyncio.sleep(0.35)  # the late reply arrives and must be ignored
        res = await client.call(ReadFileArgs("/fast"))
        assert res.value.data == b"/fast"
        assert client.lost is None
        await client.close()
        await agent.close()

    arun(go())


def test_connection_loss_fails_every_pending_call_and_stream():
    async def handler(agent, env):
        if env.kind == "tail_file":
            await agent.send(env.ch, "tail_file_result", OpResult.success(None))
            await agent.frame(env.ch, b"first")
        # other requests are never answered

    async def go():
        client, agent = await pair(handler)
        ack, stream = await client.open_stream(TailFileArgs("/log"))
        assert ack.ok
        p1 = asyncio.ensure_future(client.call(GetTimeArgs()))
        p2 = asyncio.ensure_future(client.call(ReadFileArgs("/a")))
        while len(agent.received) < 4:
            await asyncio.sleep(0.005)
        await agent.close()  # the agent goes away
        for p in (p1, p2):
            with pytest.raises(ConnectionLost):
                await p
        assert await stream.read(1) == b"first"  # data already received is still delivered
        with pytest.raises(ConnectionLost):
            await stream.read(1)
        with pytest.raises(ConnectionLost):
            await client.call(GetTimeArgs())
        assert isinstance(client.lost, ConnectionLost)
        await client.close()

    arun(go())


def test_garbage_from_agent_marks_connection_lost_with_frame_error():
    async def handler(agent, env):
        await agent.send_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack

    async def go():
        client, agent = await pair(handler)
        with pytest.raises(FrameClientError) as ei:
            await client.call(GetTimeArgs())
        assert "frame" in str(ei.value)
        await client.close()
        await agent.close()

    arun(go())


def test_stream_flow_control_keeps_agent_within_window():
    total = 3 * STREAM_WINDOW
    chunk = 64 * 1024
    peak = {"inflight": 0}

    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.success(None))
        sent = 0
        while sent < total:
            inflight = sent - agent.credit.get(env.ch, 0)
            if inflight + chunk > STREAM_WINDOW:
                agent.credit_event.clear()
                await agent.credit_event.wait()
                continue
            await agent.frame(env.ch, b"x" * chunk)
            sent += chunk
            peak["inflight"] = max(peak["inflight"], sent - agent.credit.get(env.ch, 0))
        await agent.send(env.ch, "stream_end", StreamEnd("eof"))

    async def go():
        client, agent = await pair(handler)
        ack, stream = await client.open_stream(TailFileArgs("/big"))
        got = 0
        while True:
            c = await stream.read(5)
            if c is None:
                break
            assert c != b"", "stalled: the agent ran out of credit"
            got += len(c)
        assert got == total
        assert stream.end == StreamEnd("eof")
        # The host granted credit as it consumed, and the agent never exceeded the window.
        ch = stream.ch
        assert agent.credit[ch] >= total - STREAM_WINDOW
        assert peak["inflight"] <= STREAM_WINDOW
        await client.close()
        await agent.close()

    arun(go())


def test_closing_a_stream_sends_cancel_and_drops_later_frames():
    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.success(None))
        await agent.frame(env.ch, b"a")
        while env.ch not in agent.cancelled:
            await asyncio.sleep(0.005)
        await agent.frame(env.ch, b"late")  # raced with the cancel: must be ignored

    async def go():
        client, agent = await pair(handler)
        ack, stream = await client.open_stream(TailFileArgs("/log"))
        assert await stream.read(2) == b"a"
        await stream.close()
        for _ in range(200):
            if stream.ch in agent.cancelled:
                break
            await asyncio.sleep(0.005)
        assert stream.ch in agent.cancelled
        assert await stream.read(0.05) is None
        assert client.lost is None
        await client.close()
        await agent.close()

    arun(go())


def test_stream_refused_returns_error_ack_and_no_stream():
    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.failure(2, "No such file or directory"))

    async def go():
        client, agent = await pair(handler)
        ack, stream = await client.open_stream(TailFileArgs("/missing"))
        assert not ack.ok and ack.value == OsError(2, "No such file or directory") and stream is None
        assert client._streams == {}
        await client.close()
        await agent.close()

    arun(go())


def test_stream_end_with_error_is_kept():
    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.success(None))
        await agent.frame(env.ch, b"partial")
        await agent.send(env.ch, "stream_end", StreamEnd("error", OsError(5, "Input/output error")))

    async def go():
        client, agent = await pair(handler)
        _, stream = await client.open_stream(TailFileArgs("/dev/x"))
        assert await stream.read(2) == b"partial"
        assert await stream.read(2) is None
        assert stream.end.reason == "error" and stream.end.error.errno == 5
        await client.close()
        await agent.close()

    arun(go())


def test_stream_read_timeout_returns_empty_bytes():
    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.success(None))

    async def go():
        client, agent = await pair(handler)
        _, stream = await client.open_stream(TailFileArgs("/quiet"))
        t0 = asyncio.get_running_loop().time()
        assert await stream.read(0.1) == b""
        assert asyncio.get_running_loop().time() - t0 >= 0.09
        await client.close()
        await agent.close()

    arun(go())


def test_unattributable_agent_error_fails_inflight_requests():
    async def handler(agent, env):
        await agent.send(0, "agent_error", AgentError(AgentErrorKind.BAD_REQUEST, "cannot decode frame"))

    async def go():
        client, agent = await pair(handler)
        with pytest.raises(AgentFailure) as ei:
            await client.call(GetTimeArgs(), timeout=5)
        assert "bad_request" in str(ei.value)
        await client.close()
        await agent.close()

    arun(go())


def test_cancelled_call_tells_the_agent():
    async def handler(agent, env):
        pass  # never answers

    async def go():
        client, agent = await pair(handler)
        task = asyncio.ensure_future(client.call(GetTimeArgs()))
        while not any(e.kind == "get_time" for e in agent.received):
            await asyncio.sleep(0.005)
        ch = [e.ch for e in agent.received if e.kind == "get_time"][0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if ch in agent.cancelled:
                break
            await asyncio.sleep(0.005)
        assert ch in agent.cancelled
        assert client.lost is None
        await client.close()
        await agent.close()

    arun(go())


def test_a_large_request_goes_to_the_transport_without_copying_its_data():
    """write_file's data is handed to the transport as it is (a part of its own),
    and the bytes on the wire are exactly those of the plainly packed frame."""
    from provium.protocol.messages import WriteFileArgs
    from provium.protocol.types import WriteFileMode

    data = bytes(range(256)) * 8192  # 2 MiB
    written: list[Any] = []

    class Writer:
        def write(self, part: Any) -> None:
            written.append(part)

        async def drain(self) -> None:
            pass

    async def go() -> None:
        client = MuxClient(asyncio.StreamReader(), Writer())  # type: ignore[arg-type]
        env = Envelope(5, "write_file", WriteFileArgs("/tmp/x", data, WriteFileMode.REPLACE))
        await client._send(env)
        assert all(p.obj is data for p in written if isinstance(p, memoryview))  # views of it, in slices
        assert sum(len(p) for p in written if isinstance(p, memoryview)) == len(data)
        wire = b"".join(written)
        assert len(wire) == len(encode_frame(env.to_wire())) and wire.endswith(data)  # the data goes last
        assert decode_host(unpack(wire[4:])) == env

    asyncio.run(go())


def test_large_stream_frames_arrive_whole_and_queued_ones_come_joined():
    # 1 MiB frames are unpacked with their data left in the frame (a view);
    # read() hands out bytes, everything queued joined in one piece.
    one = bytes(range(256)) * 4096  # 1 MiB
    two = one[::-1]
    sent = asyncio.Event()

    async def handler(agent, env):
        await agent.send(env.ch, "tail_file_result", OpResult.success(None))
        await agent.frame(env.ch, one)
        await agent.frame(env.ch, two)
        await agent.send(env.ch, "stream_end", StreamEnd("eof"))
        sent.set()

    async def go():
        client, agent = await pair(handler)
        _, stream = await client.open_stream(TailFileArgs("/big"))
        await sent.wait()
        while stream.end is None:
            await asyncio.sleep(0.01)
        got = await stream.read(5)
        assert type(got) is bytes and got == one + two
        assert await stream.read(1) is None
        await client.close()
        await agent.close()

    arun(go())


def test_a_large_reply_that_is_not_a_stream_frame_comes_as_bytes():
    data = b"\x00stream_frame" * 100_000  # > 1 MiB, and the stream mark inside it

    async def handler(agent, env):
        await agent.send(env.ch, "read_file_result", OpResult.success(DataOk(data)))

    async def go():
        client, agent = await pair(handler)
        r = await client.call(ReadFileArgs("/f"), timeout=5)
        assert type(r.value.data) is bytes and r.value.data == data
        await client.close()
        await agent.close()

    arun(go())

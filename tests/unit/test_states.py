"""Lifecycle enums and the `requires` guard."""

from __future__ import annotations

import asyncio
import socket

import pytest

from provium.agent.server import Phase, Session
from provium.agent.state import AgentState
from provium.errors import StateError, requires
from provium.host.errors import WrongState
from provium.host.states import VmState
from provium.protocol.mux import ClientState, ConnectionLost, MuxClient


class _Door:
    def __init__(self) -> None:
        self.state = "shut"

    def _wrong_state(self, action: str) -> StateError:
        return StateError(f"door is {self.state} (cannot {action})")

    @requires("open")
    def walk_through(self) -> str:
        return "walked"

    @requires("open", "ajar", action="peek")
    async def apeek(self) -> str:
        return "peeked"


def test_requires_guards_plain_and_async_methods():
    d = _Door()
    with pytest.raises(StateError, match=r"door is shut \(cannot walk_through\)"):
        d.walk_through()
    coro = d.apeek()  # checked when it runs, not when made
    with pytest.raises(StateError, match=r"cannot peek"):
        asyncio.run(coro)
    d.state = "ajar"
    assert asyncio.run(d.apeek()) == "peeked"
    d.state = "open"
    assert d.walk_through() == "walked"
    assert _Door.walk_through.required_states == frozenset({"open"})


def test_vm_state_is_a_string_and_booting_shows_as_created():
    assert VmState.BOOTED == "booted" and f"{VmState.BOOTED}" == "booted" and str(VmState.DEAD) == "dead"
    assert VmState.BOOTING.public == "created"
    assert [s.public for s in VmState] == ["created", "created", "booted", "paused", "shutdown", "dead"]


def test_wrong_state_words_booting_like_before():
    assert str(WrongState("w", VmState.BOOTING, "boot")) == "vm `w`: VM is already booting (cannot boot)"
    assert str(WrongState("w", VmState.BOOTING, "run")) == "vm `w`: VM not booted (cannot run)"
    assert str(WrongState("w", VmState.PAUSED, "run")) == "vm `w`: VM is paused; use resume() (cannot run)"
    assert isinstance(WrongState("w", VmState.DEAD, "run"), StateError)


def test_client_goes_from_open_to_closed_and_refuses_to_send():
    async def main():
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        client = MuxClient(reader, writer)
        client.start()
        assert client.state is ClientState.OPEN and not client.closed
        await client.close()
        assert client.state is ClientState.CLOSED and client.closed
        with pytest.raises(ConnectionLost, match="the connection to the agent is closed"):
            await client._send(None)  # type: ignore[arg-type]
        b.close()

    asyncio.run(main())


def test_client_that_loses_its_agent_is_lost_and_says_why():
    async def main():
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        client = MuxClient(reader, writer)
        client.start()
        b.close()
        for _ in range(100):
            if client.state is ClientState.LOST:
                break
            await asyncio.sleep(0.01)
        assert client.state is ClientState.LOST
        with pytest.raises(ConnectionLost, match="the agent closed the connection"):
            await client._send(None)  # type: ignore[arg-type]
        await client.close()
        assert client.state is ClientState.CLOSED

    asyncio.run(main())


def test_agent_session_phases():
    a, b = socket.socketpair()
    s = Session(a, a, AgentState(local=True))
    assert s.phase is Phase.HELLO and not s.ready
    b.close()
    assert s.run() == "eof"
    assert s.phase is Phase.DEAD and s.dead
    assert s.send(1, "x", None) is False  # nothing is written once dead
    a.close()


def test_agent_session_methods_are_guarded_by_phase():
    from provium.agent.server import WrongPhase
    from provium.protocol.envelope import Envelope
    from provium.protocol.messages import GetTimeArgs, Hello

    assert Session._request.required_states == frozenset({Phase.READY})
    assert Phase.DEAD not in Session._hello.required_states
    sent = []

    class Recorder(Session):
        def send(self, ch, kind, payload, fds=()):
            sent.append((ch, kind, payload))
            return True

    a, b = socket.socketpair()
    s = Recorder(a, a, AgentState(local=True))
    s._dispatch(Envelope(1, "get_time", GetTimeArgs()))
    assert sent[-1][1] == "agent_error" and "before handshake" in sent[-1][2].message
    s._dispatch(Envelope(0, "hello", Hello(99)))
    assert s.phase is Phase.REFUSED and sent[-1][1] == "hello_err"
    s._dispatch(Envelope(1, "get_time", GetTimeArgs()))
    assert "before handshake (the last `hello` was refused" in sent[-1][2].message
    with pytest.raises(WrongPhase):
        s._request(Envelope(1, "get_time", GetTimeArgs()))
    s.phase = Phase.DEAD
    n = len(sent)
    s._dispatch(Envelope(0, "hello", Hello(1)))
    s._dispatch(Envelope(1, "get_time", GetTimeArgs()))
    assert len(sent) == n  # a dead session answers nothing
    a.close()
    b.close()

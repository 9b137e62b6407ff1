"""Fixtures shared by the agent's unit tests."""

import pytest

from agent_client_util import spawn_agent


@pytest.fixture(scope="module")
def agent():
    """One real agent subprocess per test module; it must exit cleanly and never see a bad frame."""
    c = spawn_agent()
    yield c
    assert c.close() == 0
    assert c.bad_frames == []

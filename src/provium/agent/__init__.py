"""The guest agent: answers the host's ops inside a VM (or on the host, local backend).

Imports only the standard library, msgpack and `provium.protocol`, so it can be
shipped into a guest on its own.  `serve(rfile, wfile, state)` runs the channel
multiplexer over any blocking byte stream; `python -m provium.agent --fd N`
serves an inherited socket.  See docs/protocol.md for the wire.

`serve` and `AgentState` are imported on first use, so that importing a
submodule (the entry points, `startup`) does not pull in everything first.
"""

__all__ = ["AgentState", "serve"]


def __getattr__(name: str):
    if name == "serve":
        from .server import serve

        return serve
    if name == "AgentState":
        from .state import AgentState

        return AgentState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The guest agent: answers the host's ops inside a VM (or on the host, local backend).

Imports only the standard library, msgpack and `provium.protocol`, so it can be
shipped into a guest on its own.  `serve(rfile, wfile, state)` runs the channel
multiplexer over any blocking byte stream; `python -m provium.agent --fd N`
serves an inherited socket.  See docs/protocol.md for the wire.
"""

from .server import serve
from .state import AgentState

__all__ = ["AgentState", "serve"]

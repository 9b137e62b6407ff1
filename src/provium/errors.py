"""The root of every error provium raises.

Every exception class under `provium` derives from `ProviumError`, so a caller
(the CLI, the Lua layer, a pytest user) can catch "anything provium refused"
with one `except` and classify with `isinstance`, never by class name.  An
error's message is the whole story for a user: what was called, with what,
what would be valid and what was seen.  A wrapped error keeps its cause
(`raise ... from exc`).

This module imports nothing from provium: the wire protocol and the guest
agent may import it.
"""

from __future__ import annotations


class ProviumError(Exception):
    """Base of every error provium raises."""

"""Errors of the network layer (all `ProviumError`s, in the families of `provium.errors`)."""

from __future__ import annotations

from ..errors import ArgumentError, StateError


class NetError(StateError):
    """A bridge or NIC operation was refused (not attached, not booted, closed) or
    could not be carried out."""


class BridgeArgumentError(NetError, ArgumentError):
    """A bridge or NIC method got an argument it cannot use (the message names
    the method, the argument and what would be valid)."""

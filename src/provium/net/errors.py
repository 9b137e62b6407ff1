"""Errors of the network layer (all `ProviumError`s)."""

from __future__ import annotations

from ..host.errors import ArgumentError, ProviumError


class NetError(ProviumError):
    """A bridge or NIC operation was refused or failed."""


class BridgeArgumentError(NetError, ArgumentError):
    """A bridge or NIC method got an argument it cannot use (the message names
    the method, the argument and what would be valid)."""

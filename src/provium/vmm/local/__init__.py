"""The local backend: the agent as a host subprocess, no VM at all."""

from .backend import LocalInstance, LocalVmm

__all__ = ["LocalInstance", "LocalVmm"]

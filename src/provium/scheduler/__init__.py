"""Discovery, pool sizing and dispatch of test files to runner subprocesses."""

from .discovery import Discovered, DiscoveryError, discover
from .dispatch import Dispatcher, DispatchOptions
from .pool import PoolSize, size_pool
from .results import FileResult, TestOutcome

__all__ = ["Discovered", "DiscoveryError", "discover", "Dispatcher", "DispatchOptions", "PoolSize", "size_pool",
           "FileResult", "TestOutcome"]

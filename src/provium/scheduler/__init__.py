"""Discovery, pool sizing and dispatch of test files to runner subprocesses.

The names load on first use (PEP 562): the CLI imports `scheduler.zygote_client`
before anything else of a run, and that must not pull in the dispatcher.
"""

TYPE_CHECKING = False

_EXPORTS = {
    "Discovered": ".discovery",
    "DiscoveryError": ".discovery",
    "discover": ".discovery",
    "Dispatcher": ".dispatch",
    "DispatchOptions": ".dispatch",
    "PoolSize": ".pool",
    "size_pool": ".pool",
    "FileResult": ".results",
    "TestOutcome": ".results",
}

if TYPE_CHECKING:
    from .discovery import Discovered, DiscoveryError, discover
    from .dispatch import Dispatcher, DispatchOptions
    from .pool import PoolSize, size_pool
    from .results import FileResult, TestOutcome

__all__ = ["Discovered", "DiscoveryError", "discover", "Dispatcher", "DispatchOptions", "PoolSize", "size_pool",
           "FileResult", "TestOutcome"]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provium.scheduler' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value

"""Discovery, pool sizing and dispatch of test files to runner subprocesses.

The names load on first use (PEP 562): the CLI imports `scheduler.zygote_client`
before anything else of a run, and that must not pull in the dispatcher.
"""

TYPE_CHECKING = False

from .. import _lazy_names  # noqa: E402

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


__getattr__, __dir__ = _lazy_names(__name__, _EXPORTS, globals())

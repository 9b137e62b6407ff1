"""Start-up shortcuts for the agent process (inside a slow guest, every import counts).

`defer_inspect()` must run before `dataclasses` is first imported.  dataclasses
imports `inspect` (and through it `ast`, `dis`, `tokenize`, `linecache`: about a
fifth of the agent's imports) but uses it only to write a docstring for a class
that has none; every wire type has one.  So `inspect` gets a stand-in module
that imports the real one the first time anything is looked up on it: code
that does use inspect still works, it just pays for it then.  The same for
`copy` (and `weakref`, which only copy brings in): dataclasses uses it only in
`asdict`/`astuple`, which the agent never calls.
"""

from __future__ import annotations

import sys
import types


class _Deferred(types.ModuleType):
    """Stands in for a module that is imported on first attribute access."""

    def __getattr__(self, attr: str):
        return getattr(_load(self), attr)


def _load(stub: _Deferred) -> types.ModuleType:
    import importlib

    name = stub.__name__
    if sys.modules.get(name) is stub:
        del sys.modules[name]
    real = importlib.import_module(name)
    # Later lookups on the stand-in (held by whoever imported it early) are direct.
    for key, value in vars(real).items():
        if key not in ("__name__", "__spec__", "__loader__"):
            setattr(stub, key, value)
    return real


def defer(name: str) -> None:
    """Let `import name` succeed cheaply now and load the module when first used."""
    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


def defer_inspect() -> None:
    defer("inspect")
    defer("copy")

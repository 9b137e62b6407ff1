"""Start-up shortcuts for the agent process (inside a slow guest, every import counts).

`defer_inspect()` must run before `dataclasses` is first imported.  dataclasses
imports `inspect` (and through it `ast`, `dis`, `tokenize`, `linecache`: about a
fifth of the agent's imports) but uses it only to write a docstring for a class
that has none; every wire type has one.  So `inspect` gets a stand-in module
that imports the real one the first time anything is looked up on it: code
that does use inspect still works, it just pays for it then.  The same for
`copy` (and `weakref`, which only copy brings in): dataclasses uses it only in
`asdict`/`astuple`, which the agent never calls.

And `re` (with `re._compiler`, `re._parser`, `enum`'s flags, `copyreg`: about a
fifth of the agent's import time): dataclasses compiles one pattern as it is
imported and matches it only against a field annotation written as a string.
The wire types' annotations are real types (their modules do without
`from __future__ import annotations`), so the agent need not load `re` at all:
the stand-in's `compile`, called from dataclasses, returns a pattern compiled on
its first use; any other use of `re` loads the real module.
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


def defer(name: str, kind: type = _Deferred) -> None:
    """Let `import name` succeed cheaply now and load the module when first used."""
    if name not in sys.modules:
        sys.modules[name] = kind(name)


def _real(stub: _Deferred) -> types.ModuleType:
    """The real module behind `stub` (imported now if it was not yet)."""
    mod = sys.modules.get(stub.__name__)
    return _load(stub) if mod is None or mod is stub else mod


class _DeferredRe(_Deferred):
    """`re`, whose `compile` called by dataclasses compiles on the pattern's first use."""

    def compile(self, pattern, flags=0):
        if sys._getframe(1).f_globals.get("__name__") == "dataclasses":
            return _LazyPattern(self, pattern, flags)
        return _real(self).compile(pattern, flags)


class _LazyPattern:
    """A regular expression compiled by the real `re` the first time it is used."""

    def __init__(self, stub: _Deferred, pattern, flags) -> None:
        self._args = (stub, pattern, flags)

    def __getattr__(self, attr: str):
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            stub, pattern, flags = self._args
            compiled = self.__dict__["_compiled"] = _real(stub).compile(pattern, flags)
        return getattr(compiled, attr)


def defer_inspect() -> None:
    """Stand-ins for what dataclasses imports and the agent does not use (see above)."""
    defer("inspect")
    defer("copy")
    defer("re", _DeferredRe)

"""Shipped into the guest as the top-level module `provium_boot`.

    python /provium/lib/python3/run.pyc package.module:function ARGS...

(the bytecode of `import provium_boot; provium_boot.run(...)`, see RUN_SOURCE in
runtime.py) imports the module, calls the function (argv is `[run.pyc, ARGS...]`)
and exits with its return value.  Not `-m`: that would import runpy and
importlib.util first, a measurable share of a start-up under TCG.  Not `-c`:
its text would be compiled, and the first compile in a fresh guest is costly
(see below).

Before that, one start-up shortcut: no source text is compiled from the
interpreter's start until the agent has answered its first ops.  `dataclasses`
builds each class's methods by compiling generated source text, `namedtuple`
(collections) its `__new__`, and the protocol's codec evaluates each field's
string annotation the first time it meets a type.  Under TCG compiling is slow,
and the first compile in a fresh guest costs more still: the emulator translates
the interpreter's whole parser and compiler the first time they run (about 0.03 s
of emulated CPU for a `-c pass`).  The overlay builder ran the agent's imports
on the host with the same interpreter and kept every such code object, keyed by
its source text, in a marshal file, with every wire type's field annotations
compiled ahead; those three modules get an `exec`/`eval` that looks the text up
there first and compiles only what it does not find.  Same text, same
interpreter, same code object: the classes and values come out identical.
What only the agent's first ops build (each op family's wire types, imported on
that family's first op: protocol/kinds.py) stays marshalled in the file until the
first lookup that misses.

And one more: the modules the agent imports at start-up come preloaded.  The
overlay builder measured which they are and stored their code objects in one
marshal file; a finder placed before the path finder serves them from that
table.  Each import then skips the search along sys.path and zipimport's
opening, seeking and reading of the zip (a few milliseconds per module under
TCG, for some sixty modules).  The modules of the agent's first ops (its op
families' handlers and wire types) are in the table too, as marshalled bytes
unmarshalled only when imported.  Modules not in the table come from the zip.

Stdlib only: it runs before anything else is importable.  Its files are found
beside the zip on sys.path, so the runtime also works unpacked on a host.
"""

import sys

CODE_CACHE = "code-cache.bin"
PRELOAD = "boot-modules.bin"
# `copy` (imported by dataclasses) tries `from org.python.core import PyStringMap`,
# for Jython; failing that search along sys.path costs milliseconds under TCG.
# None in sys.modules makes it fail at once, with the same ImportError.
NEVER_FOUND = ("org",)


def _data_dir() -> str:
    """/provium/lib/python3 in a guest: the directory beside our zip on sys.path."""
    for entry in sys.path:
        if entry.endswith("/python3.zip"):
            return entry[: -len(".zip")]
    return "/provium/lib/python3"


def _load(path: str):
    import marshal

    try:
        with open(path, "rb") as f:
            return marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None


class Preloaded:
    """Finder and loader for the code objects in PRELOAD:
    {name: (origin, package directory or None, code)}, paths relative to `root`
    (/provium/lib in a guest).  `code` is the marshalled bytes of a code object for
    the modules imported on the agent's first ops (its op families): unmarshalling
    them all at start-up would cost what importing them lazily saves."""

    def __init__(self, table: dict, root: str) -> None:
        self.table = table
        self.root = root

    def find_spec(self, name, path=None, target=None):
        entry = self.table.get(name)
        if entry is None:
            return None
        origin, search, _ = entry
        spec = sys.modules["_frozen_importlib"].ModuleSpec(name, self, origin=f"{self.root}/{origin}",
                                                           is_package=search is not None)
        if search is not None:
            # submodules not preloaded come from there (the zip, or msgpack's directory)
            spec.submodule_search_locations = [f"{self.root}/{search}"]
        spec.has_location = True  # __file__ = origin, as zipimport would set it
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        # Popped: once run, the module's code object is garbage.
        _, _, code = self.table.pop(module.__spec__.name)
        if isinstance(code, bytes):  # a module of the first ops, kept marshalled until now
            import marshal

            code = marshal.loads(code)
        exec(code, module.__dict__)

    def get_source(self, name):
        return None  # the guest has no sources; tracebacks show file and line


def preload(path: str) -> bool:
    """Serve the modules in `path` ahead of sys.path; False when there is no such file."""
    table = _load(path)
    if not isinstance(table, dict):
        return False
    for name in NEVER_FOUND:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable"
    finder = Preloaded(table, path.rsplit("/", 2)[0])
    names = [getattr(f, "__name__", "") for f in sys.meta_path]
    # After the builtin and frozen importers (they are faster still), before the path finder.
    sys.meta_path.insert(names.index("PathFinder") if "PathFinder" in names else len(names), finder)
    return True


def _defer_inspect() -> None:
    # Before dataclasses pulls in inspect/ast/dis: the agent never needs them at start-up.
    try:
        from provium.agent.startup import defer_inspect
    except ImportError:
        return
    defer_inspect()


def install(data_dir: str | None = None) -> None:
    import builtins

    data_dir = data_dir or _data_dir()
    preload(f"{data_dir}/{PRELOAD}")
    cached = _load(f"{data_dir}/{CODE_CACHE}")
    if not isinstance(cached, dict):
        _defer_inspect()
        return
    exec_code, eval_code = cached.get("exec", {}), cached.get("eval", {})
    # The code compiled only for what the agent builds on its first ops (its op
    # families' types) stays marshalled until one of them is first looked up.
    later = [cached.get("later")]
    import _thread

    lock = _thread.allocate_lock()
    real_exec, real_eval = builtins.exec, builtins.eval

    def more() -> None:
        # Under the lock, and `later` emptied only once the tables hold its code: a
        # second thread's first op waits for it instead of compiling meanwhile.
        with lock:
            blob = later[0]
            if isinstance(blob, bytes):
                import marshal

                rest = marshal.loads(blob)
                exec_code.update(rest.get("exec", {}))
                eval_code.update(rest.get("eval", {}))
            later[0] = None

    def through_cache(table: dict, real):
        """`real` (exec or eval), running source text from `table` when it is there."""

        def run(source, globals=None, locals=None):
            if isinstance(source, str):
                code = table.get(source)
                if code is None and later[0] is not None:
                    more()
                    code = table.get(source)
                if code is not None:
                    return real(code, globals, locals)
            return real(source, globals, locals)

        return run

    exec_, eval_ = through_cache(exec_code, real_exec), through_cache(eval_code, real_eval)

    # A module global shadows the builtin for that module only.  collections first:
    # functools (which dataclasses imports) makes a namedtuple as it is imported.
    import collections

    collections.eval = eval_  # type: ignore[attr-defined]
    _defer_inspect()
    import dataclasses

    dataclasses.exec = exec_  # type: ignore[attr-defined]
    try:  # every agent serves through it; its annotations are in the cache
        from provium.protocol import codec
    except ImportError:
        return
    codec.eval = eval_  # type: ignore[attr-defined]


def run(target: str) -> None:
    import gc

    module, _, func = target.partition(":")
    # Importing allocates thousands of objects and frees almost none: the collections
    # the allocations would set off (about 5% of the start-up's instructions) find
    # nothing.  Afterwards, what the imports built is moved out of the collector's
    # sight for good (gc.freeze), so later collections do not walk it either.
    gc.disable()
    try:
        install()
        __import__(module)  # not importlib.import_module: importing importlib costs time
    finally:
        gc.freeze()
        gc.enable()
    rc = getattr(sys.modules[module], func or "main")()
    sys.exit(rc)

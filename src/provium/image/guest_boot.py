"""Shipped into the guest as the top-level module `provium_boot`.

    python -c 'import provium_boot; provium_boot.run("package.module:function")' ARGS...

imports the module, calls the function (argv is `["-c", ARGS...]`, as the function
would see it under `python -m`) and exits with its return value.  Not `-m`:
that would import runpy and importlib.util first, a measurable share of a
start-up under TCG.

Before that, one start-up shortcut: `dataclasses` builds each class's methods by
compiling generated source text at import time, and under TCG that compiling
is a large share of the agent's start.  The overlay builder ran the agent's
imports on the host with the same interpreter and kept every such code object,
keyed by its source text, in a marshal file; `dataclasses` gets an `exec` that
looks the text up there first and compiles only what it does not find.  Same
text, same interpreter, same code object: the classes come out identical.

Stdlib only: it runs before anything else is importable.
"""

import sys

CODE_CACHE = "/provium/lib/python3/dataclass-code.bin"


def install(path: str = CODE_CACHE) -> None:
    import builtins
    import marshal

    try:
        with open(path, "rb") as f:
            cached = marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):
        return
    # Before dataclasses pulls in inspect/ast/dis: the agent never needs them at start-up.
    try:
        from provium.agent.startup import defer_inspect

        defer_inspect()
    except ImportError:
        pass
    import dataclasses

    real_exec = builtins.exec

    def exec_(source, globals=None, locals=None):
        if isinstance(source, str):
            code = cached.get(source)
            if code is not None:
                return real_exec(code, globals, locals)
        return real_exec(source, globals, locals)

    dataclasses.exec = exec_  # type: ignore[attr-defined]  # a module global shadows the builtin for dataclasses only


def run(target: str) -> None:
    module, _, func = target.partition(":")
    install()
    import importlib

    rc = getattr(importlib.import_module(module), func or "main")()
    sys.exit(rc)

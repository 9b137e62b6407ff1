"""Shipped into the guest as the top-level module `provium_boot`: `python -m provium_boot MODULE ARGS...`.

Runs MODULE as `__main__` (like `python -m MODULE ARGS...`) after one start-up
shortcut.  `dataclasses` builds each class's methods by compiling generated
source text at import time; under TCG that compiling is a large share of the
agent's start.  The overlay builder ran the agent's imports on the host with
the same interpreter and kept every such code object, keyed by its source
text, in a marshal file; here `dataclasses` gets an `exec` that looks the text
up there first and compiles only what it does not find.  Same text, same
interpreter, same code object: the classes come out identical.

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
    import dataclasses

    real_exec = builtins.exec

    def exec_(source, globals=None, locals=None):
        if isinstance(source, str):
            code = cached.get(source)
            if code is not None:
                return real_exec(code, globals, locals)
        return real_exec(source, globals, locals)

    dataclasses.exec = exec_  # a module global shadows the builtin for dataclasses only


def main() -> None:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: python -m provium_boot MODULE [ARGS...]\n")
        sys.exit(2)
    install()
    import runpy

    target = sys.argv[1]
    del sys.argv[1]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

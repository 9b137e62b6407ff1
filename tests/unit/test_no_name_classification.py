"""No code under src/ tells types apart by their class or module name.

`isinstance` (or lupa's `lua_type`) says what a value is; a class name may
appear in a message, never in a decision.  This walks every source file's
syntax tree and fails on a comparison, a `startswith`/`endswith`, or a
subscript that uses `__name__`, `__qualname__`, `__module__` or `__class__`
of an object (the module-level `__name__ == "__main__"` is a plain name,
not an attribute, and is fine)."""

from __future__ import annotations

import ast
from pathlib import Path

import provium

NAMES = {"__name__", "__qualname__", "__module__", "__class__"}
SRC = Path(provium.__file__).parent


def _uses_name(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in NAMES for n in ast.walk(node))


def offenders(tree: ast.AST) -> list[int]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and _uses_name(node):
            bad.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and _uses_name(node.func.value)):
            bad.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _uses_name(node.slice):
            bad.append(node.lineno)
        elif isinstance(node, ast.Match) and _uses_name(node.subject):
            bad.append(node.lineno)
    return bad


def test_no_source_file_classifies_by_class_or_module_name():
    found = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 100  # the tree was found
    for path in files:
        for line in offenders(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(SRC.parent)}:{line}")
    assert not found, "classify with isinstance, not by name:\n" + "\n".join(found)


def test_the_check_sees_each_pattern():
    samples = [
        'if "LuaTable" in type(v).__name__: pass',
        'ok = exc.__class__.__name__ == "QMPError"',
        'if type(e).__module__.startswith("qemu"): pass',
        'kind = TABLE[type(v).__name__]',
        'match type(v).__qualname__:\n    case "X": pass',
    ]
    for code in samples:
        assert offenders(ast.parse(code)), code
    fine = ['if __name__ == "__main__": pass', 'raise TypeError(f"got {type(v).__name__}")',
            'log.info("%s", type(v).__name__)']
    for code in fine:
        assert not offenders(ast.parse(code)), code

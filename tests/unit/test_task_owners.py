"""Every background task has an owner: no `create_task`/`ensure_future` whose result is dropped.

A task nobody holds can be garbage-collected mid-flight and is never cancelled
at teardown (docs/contributing.md, "Lifecycles").  This walks the source tree
and fails on such a call used as a bare statement."""

from __future__ import annotations

import ast
from pathlib import Path

import provium

SRC = Path(provium.__file__).parent
SPAWNERS = {"create_task", "ensure_future", "run_coroutine_threadsafe"}


def bare_spawns(tree: ast.AST) -> list[int]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in SPAWNERS:
                out.append(node.lineno)
    return out


def test_no_task_is_started_without_a_holder():
    found = [f"{p.relative_to(SRC.parent)}:{line}" for p in sorted(SRC.rglob("*.py"))
             for line in bare_spawns(ast.parse(p.read_text(), str(p)))]
    assert not found, "keep the task (a set + add_done_callback(set.discard), or an attribute):\n" + "\n".join(found)


def test_the_check_sees_a_dropped_task():
    assert bare_spawns(ast.parse("asyncio.get_running_loop().create_task(work())"))
    assert bare_spawns(ast.parse("asyncio.ensure_future(work())"))
    assert not bare_spawns(ast.parse("t = loop.create_task(work()); tasks.add(t)"))

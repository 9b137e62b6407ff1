"""Every runnable example in `docs/python.md` passes under pytest with the plugin.

The convention is the Lua docs' (`test_doc_examples.py`, whose `extract` this
reuses): a ```python block directly after `<!-- example: local -->` or
`<!-- example: qemu -->` is a complete pytest file.  All examples of a kind
run in one pytest subprocess with `--provium-vmm local` (or `qemu`), and
every test in them must pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_doc_examples import Example, extract

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "python.md"
EXAMPLES = extract(DOC.read_text(), "docs/python.md", lang="python")


def _file_name(ex: Example) -> str:
    return f"test_doc_python_{ex.line}.py"


def _run_examples(kind: str, tmp_path: Path, timeout: int) -> None:
    examples = [e for e in EXAMPLES if e.kind == kind]
    assert examples, f"docs/python.md has no `{kind}` example"
    for ex in examples:
        (tmp_path / _file_name(ex)).write_text(ex.source)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "provium.pytest_plugin", "-p", "no:cacheprovider",
                        "-q", "-rA", "--provium-vmm", kind, *[_file_name(e) for e in examples]],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    per_file: dict[str, list[str]] = {}
    for m in re.finditer(r"^(PASSED|FAILED|SKIPPED|ERROR) (test_doc_python_\d+\.py)", r.stdout, re.M):
        per_file.setdefault(m.group(2), []).append(m.group(1))
    for ex in examples:
        got = per_file.get(_file_name(ex))
        assert got, f"{ex.id}: declares no test\n{out}"
        assert set(got) == {"PASSED"}, f"{ex.id}: {got}\n{out}"
    assert r.returncode == 0, out


def test_the_python_doc_has_both_kinds():
    assert {e.kind for e in EXAMPLES} == {"local", "qemu"}
    assert all(e.lang == "python" for e in EXAMPLES)


def test_extract_reads_python_blocks_and_refuses_a_mismatched_fence():
    doc = "<!-- example: local -->\n```python\ndef test_x():\n    pass\n```\n"
    [ex] = extract(doc, "d.md", lang="python")
    assert ex.lang == "python" and "def test_x" in ex.source
    with pytest.raises(ValueError, match="directly followed by a ```python block"):
        extract("<!-- example: local -->\n```lua\n```\n", "d.md", lang="python")


def test_local_python_doc_examples(tmp_path):
    _run_examples("local", tmp_path, timeout=300)


@pytest.mark.qemu
def test_qemu_python_doc_examples(tmp_path):
    _run_examples("qemu", tmp_path, timeout=600)

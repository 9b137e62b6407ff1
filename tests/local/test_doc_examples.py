"""Every runnable example in `docs/*.md` runs and passes, as a user would run it.

Convention: a fenced ```lua block directly preceded by the line
`<!-- example: local -->` (run with `--vmm local`) or `<!-- example: qemu -->`
(a real guest) is a complete test file.  Each is written out as a `.test.lua`
and run with `provium`; every test in it must pass (none failed, none
skipped unless the example says `-- expect: skipped`, no chunk error).
Unmarked blocks are fragments and are not run.  A marker not followed by a
```lua (or, for `docs/python.md`, ```python) block is an error, so a marker
cannot silently stop working.  `extract` serves both languages: the Python
examples are run by `tests/local/test_python_docs.py`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*example:\s*(\w+)\s*-->\s*$")
KINDS = ("local", "qemu")
LANGS = ("lua", "python")


@dataclass(frozen=True)
class Example:
    doc: str  # docs/x.md
    line: int  # line of the ```lua fence
    kind: str
    source: str
    lang: str = "lua"

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def file_name(self) -> str:
        return f"{Path(self.doc).stem}-{self.line}.test.lua"


def extract(text: str, doc: str, lang: str = "lua") -> list[Example]:
    """The marked ```<lang> blocks of one document."""
    if lang not in LANGS:
        raise ValueError(f"unknown example language `{lang}` (valid: {', '.join(LANGS)})")
    fence = "```" + lang
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        kind = m.group(1)
        if kind not in KINDS:
            raise ValueError(f"{doc}:{i + 1}: unknown example kind `{kind}` (valid: {', '.join(KINDS)})")
        if i + 1 >= len(lines) or lines[i + 1].strip() != fence:
            raise ValueError(f"{doc}:{i + 1}: an example marker must be directly followed by a {fence} block")
        body = []
        for j in range(i + 2, len(lines)):
            if lines[j].strip() == "```":
                break
            body.append(lines[j])
        else:
            raise ValueError(f"{doc}:{i + 2}: the {fence} block never ends")
        out.append(Example(doc=doc, line=i + 2, kind=kind, source="\n".join(body) + "\n", lang=lang))
    return out


PYTHON_DOCS = ("python.md",)  # documents whose examples are ```python


def all_examples() -> list[Example]:
    found = []
    for path in sorted(DOCS.glob("*.md")):
        if path.name in PYTHON_DOCS:
            continue  # its examples are pytest files (tests/local/test_python_docs.py)
        found += extract(path.read_text(), f"docs/{path.name}")
    return found


EXAMPLES = all_examples()


def _run(files: list[Path], cwd: Path, *extra: str, timeout: int) -> dict[str, dict]:
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(cwd / ".rerun.json"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "--json", "--no-progress", *extra,
                        *[f.name for f in files]], cwd=cwd, env=env, capture_output=True, timeout=timeout)
    objs = {}
    for line in r.stdout.decode(errors="replace").splitlines():
        o = json.loads(line)
        objs[o["path"]] = o
    assert set(objs) == {f.name for f in files}, r.stdout.decode() + r.stderr.decode()
    return objs


def _problems(ex: Example, obj: dict) -> list[str]:
    where = f"{ex.id} ({ex.kind})"
    if obj["chunk_error"]:
        return [f"{where}: chunk error: {obj['chunk_error']}"]
    if not obj["tests"]:
        return [f"{where}: declares no test"]
    allow_skip = "-- expect: skipped" in ex.source
    bad = [t for t in obj["tests"] if t["status"] != "passed" and not (allow_skip and t["status"] == "skipped")]
    return [f"{where}: test `{t['name']}` {t['status']}: {t['message']}" for t in bad]


def test_extractor_finds_marked_blocks_only():
    doc = "\n".join([
        "```lua", "-- unmarked: a fragment", "```",
        "<!-- example: local -->", "```lua", "test('a', function(t) end)", "```",
    ])
    [ex] = extract(doc, "d.md")
    assert ex.kind == "local" and ex.line == 5 and "test('a'" in ex.source
    with pytest.raises(ValueError, match="directly followed"):
        extract("<!-- example: local -->\n\n```lua\n```\n", "d.md")
    with pytest.raises(ValueError, match="unknown example kind"):
        extract("<!-- example: kvm -->\n```lua\n```\n", "d.md")


def test_the_docs_have_runnable_examples():
    kinds = {e.kind for e in EXAMPLES}
    assert kinds == {"local", "qemu"}, kinds


@pytest.mark.parametrize("ex", [e for e in EXAMPLES if e.kind == "local"], ids=lambda e: e.id)
def test_local_doc_example(ex, tmp_path):
    f = tmp_path / ex.file_name
    f.write_text(ex.source)
    objs = _run([f], tmp_path, "--vmm", "local", timeout=120)
    assert _problems(ex, objs[f.name]) == []


@pytest.mark.qemu
def test_qemu_doc_examples(tmp_path):
    """All real-guest examples in one run: files run in parallel and nobody boots twice."""
    examples = [e for e in EXAMPLES if e.kind == "qemu"]
    files = []
    for ex in examples:
        f = tmp_path / ex.file_name
        f.write_text(ex.source)
        files.append(f)
    objs = _run(files, tmp_path, timeout=900)
    problems = [p for ex, f in zip(examples, files) for p in _problems(ex, objs[f.name])]
    assert problems == []

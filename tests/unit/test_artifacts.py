"""The run artifacts directory: what is kept, what is dropped, and where it is said."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from provium import artifacts


@dataclass
class _Result:
    path: str
    passed: bool


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.ENV_FILE, raising=False)  # enter_file sets it: undone after the test
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _vm_left_evidence(root: str, file: str, monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(artifacts.ENV_ROOT, root)
    artifacts.enter_file(file)
    scratch = tmp_path / f"scratch-{artifacts.file_slug(file)}"
    scratch.mkdir()
    (scratch / "console.log").write_text("Linux version ...\n")
    (scratch / "qemu.argv").write_text("qemu-system-x86_64 ...\n")
    (scratch / "agent.sock").write_text("not evidence")
    kept = artifacts.keep_vm_evidence(scratch, "web-vm3")
    assert kept is not None
    return kept


def test_failed_files_keep_their_evidence_and_the_path_is_printed(tmpdir_env, monkeypatch, tmp_path):
    run = artifacts.RunArtifacts("on-failure")
    assert run.root is not None and not os.path.exists(run.root)  # made by the first evidence
    bad = _vm_left_evidence(run.root, "tests/a.test.lua", monkeypatch, tmp_path)
    _vm_left_evidence(run.root, "tests/b.test.lua", monkeypatch, tmp_path)
    assert sorted(p.name for p in bad.iterdir()) == ["console.log", "qemu.argv"]
    out = io.StringIO()
    assert run.finish([_Result("tests/a.test.lua", False), _Result("tests/b.test.lua", True)], out) == run.root
    assert out.getvalue() == (f"provium: VM evidence of failed files (console log, QMP log, QEMU argv) "
                              f"kept in {run.root}\n")
    assert os.listdir(run.root) == ["tests__a.test.lua"]


def test_a_passing_run_leaves_nothing(tmpdir_env, monkeypatch, tmp_path):
    run = artifacts.RunArtifacts("on-failure")
    _vm_left_evidence(run.root, "ok.test.lua", monkeypatch, tmp_path)
    out = io.StringIO()
    assert run.finish([_Result("ok.test.lua", True)], out) is None
    assert out.getvalue() == "" and not os.path.exists(run.root)


def test_always_and_never(tmpdir_env, monkeypatch, tmp_path):
    run = artifacts.RunArtifacts("always")
    _vm_left_evidence(run.root, "ok.test.lua", monkeypatch, tmp_path)
    assert run.finish([_Result("ok.test.lua", True)], io.StringIO()) == run.root
    never = artifacts.RunArtifacts("never")
    assert never.root is None and never.env() == {} and never.finish([], io.StringIO()) is None


def test_an_interrupted_run_keeps_nothing(tmpdir_env, monkeypatch, tmp_path):
    run = artifacts.RunArtifacts("on-failure")
    _vm_left_evidence(run.root, "a.test.lua", monkeypatch, tmp_path)
    run.discard()
    assert not os.path.exists(run.root)


def test_no_run_directory_means_nothing_is_copied(monkeypatch, tmp_path):
    monkeypatch.delenv(artifacts.ENV_FILE, raising=False)
    assert artifacts.keep_vm_evidence(tmp_path, "x") is None

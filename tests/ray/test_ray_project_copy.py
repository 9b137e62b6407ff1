"""The project directory a file's Ray task runs from.

Nodes sharing a machine share Ray's unpacked working_dir, and each node's
runtime-env agent removes it and unpacks it again when it prepares the job
(Ray 2.60: `create` with overwrite=True).  A worker that entered the first copy
was left in a deleted directory, and its runner could not read its own test
file ("read `a.test.lua`: No such file or directory"; the flaky
test_fixture_is_built_once_per_node_with_the_same_key).  These tests do to a
directory what the other node's agent does, without a cluster.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from provium.scheduler.ray_executor import RayExecutorError, private_project_copy  # noqa: E402

pytestmark = pytest.mark.ray


def unpack(copy: Path) -> None:
    """What Ray's agent does to the working_dir of a job: remove it, unpack it again."""
    shutil.rmtree(copy, ignore_errors=True)
    (copy / "fixtures").mkdir(parents=True)
    (copy / "a.test.lua").write_text('test("t", function(t) end)\n')
    (copy / "fixtures" / "base.fixture.lua").write_text("return 1\n")


@pytest.fixture
def ray_copy(tmp_path, monkeypatch):
    """A worker that entered Ray's copy by name, as Ray's `cd <copy> && ...` does."""
    copy = tmp_path / "working_dir_files" / "_ray_pkg_0123456789abcdef"
    unpack(copy)
    (tmp_path / "working_dir_files" / "_ray_pkg_0123456789abcdef.zip.lock").touch()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("PWD", str(copy))
    return copy


def test_a_worker_left_in_the_removed_copy_still_reads_its_file(ray_copy, tmp_path):
    unpack(ray_copy)  # the other node's agent, after this worker entered the copy
    with pytest.raises(FileNotFoundError):
        open("a.test.lua")  # what the runner did before: it inherits the deleted cwd
    dest = tmp_path / "work"
    dest.mkdir()
    mine = private_project_copy("a.test.lua", "n1@127.0.0.1", str(dest))
    assert Path(mine, "a.test.lua").read_text().startswith("test(")
    assert Path(mine, "fixtures", "base.fixture.lua").is_file()


def test_the_private_copy_outlives_a_later_unpack_of_ray_s_copy(ray_copy, tmp_path):
    dest = tmp_path / "work"
    dest.mkdir()
    mine = private_project_copy("a.test.lua", "n1@127.0.0.1", str(dest))
    shutil.rmtree(ray_copy)  # the other node's agent, while this file runs: the fixture is read later
    assert Path(mine, "fixtures", "base.fixture.lua").read_text() == "return 1\n"


def test_the_copy_is_taken_only_once_ray_has_finished_unpacking(ray_copy, tmp_path):
    lock = os.open(str(ray_copy) + ".zip.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # Ray's agent holds it while it removes and unpacks
    shutil.rmtree(ray_copy)
    dest = tmp_path / "work"
    dest.mkdir()

    def agent() -> None:
        time.sleep(0.3)
        unpack(ray_copy)
        os.close(lock)

    threading.Thread(target=agent).start()
    mine = private_project_copy("a.test.lua", "n1@127.0.0.1", str(dest), wait=10)
    assert Path(mine, "a.test.lua").is_file() and Path(mine, "fixtures", "base.fixture.lua").is_file()


def test_an_unpack_that_never_ends_fails_naming_the_node_and_the_copy(ray_copy, tmp_path):
    lock = os.open(str(ray_copy) + ".zip.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with pytest.raises(RayExecutorError) as err:
            private_project_copy("a.test.lua", "n1@127.0.0.1", str(tmp_path), wait=0.2)
    finally:
        os.close(lock)
    msg = str(err.value)
    assert "node n1@127.0.0.1" in msg and str(ray_copy) in msg and "still being unpacked" in msg, msg


def test_a_file_missing_from_the_copy_fails_naming_the_node_and_the_copy(ray_copy, tmp_path):
    with pytest.raises(RayExecutorError) as err:
        private_project_copy("b.test.lua", "n1@127.0.0.1", str(tmp_path))
    msg = str(err.value)
    assert "node n1@127.0.0.1" in msg and "`b.test.lua`" in msg and str(ray_copy) in msg, msg

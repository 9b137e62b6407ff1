"""The zygote the `provium` command forks from itself at its start (zygote_fork.py).

Through the real command: the zygote is forked (not spawned) and dies with the
run; a crash still fails only its file; when forking is impossible (a failed
fork, a process with a thread) the zygote is spawned as before; a run that ends
before it dispatches leaves nothing behind.  The plain-text report is checked
against rich in tests/unit/test_cli_output.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import LOCAL, PASSING, provium, write
from proc_checks import gone

# Writes the pid and command line of its runner's parent (the zygote), and the
# zygote's parent, to OUT.
WHERE = """
local function stat(pid)
  local s = io.open("/proc/" .. pid .. "/stat"):read("a")
  return s:match("^%d+ %b() %S+ (%d+)")
end
test("where", function(t)
  local zygote = stat("self")
  local cmd = io.open("/proc/" .. zygote .. "/cmdline"):read("a")
  local f = io.open(OUT, "w")
  f:write(zygote .. "\\n" .. stat(zygote) .. "\\n" .. (cmd:gsub("%z", " ")))
  f:close()
end)
"""


def _where_file(tmp_path: Path, name: str = "where.test.lua") -> tuple[Path, Path]:
    out = tmp_path / f"{name}.out"
    return write(tmp_path / "t" / name, f'local OUT = "{out}"\n' + WHERE), out



def _read_where(out: Path) -> tuple[int, int, str]:
    zygote, parent, cmd = out.read_text().split("\n", 2)
    return int(zygote), int(parent), cmd


def test_the_command_forks_its_zygote_and_nothing_outlives_the_run(tmp_path):
    _, out = _where_file(tmp_path)
    r = provium(*LOCAL, "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"1 passed" in r.stdout  # flushed by the short exit
    zygote, parent, cmd = _read_where(out)
    assert "provium.cli.main" in cmd and "provium.runner.zygote" not in cmd, cmd  # a fork, not a spawn
    assert gone(zygote), "the forked zygote outlived the run"
    assert b"runner process for each file" not in r.stderr


def test_a_crash_fails_only_its_file_with_the_forked_zygote(tmp_path):
    # The runner's shell child kills the runner as a fault in C code would.
    write(tmp_path / "t" / "a_dies.test.lua",
          'test("dies", function(t) os.execute("kill -SEGV $PPID") while true do end end)\n')
    write(tmp_path / "t" / "b_fine.test.lua", PASSING)
    r = provium(*LOCAL, "--json", "t", cwd=tmp_path)
    assert r.returncode == 1, r.stderr.decode()
    recs = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.decode().splitlines())}
    assert "killed by SIGSEGV" in (recs["a_dies.test.lua"]["chunk_error"] or "")
    assert recs["b_fine.test.lua"]["passed"] and not recs["a_dies.test.lua"]["passed"]
    assert b"runner process for each file" not in r.stderr


# The `provium` command's entry, in a process where forking the zygote is impossible.
_NO_FORK = """
import os, sys, threading
how = sys.argv[1]
if how == "fork fails":
    def fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    os.fork = fork
else:  # a thread: forking this process would hand the zygote a broken copy
    threading.Thread(target=threading.Event().wait, daemon=True).start()
sys.argv = ["provium", *sys.argv[2:]]
from provium.cli.main import main
main()
"""


@pytest.mark.parametrize("how", ["fork fails", "a thread"])
def test_the_zygote_is_spawned_when_the_command_cannot_fork(tmp_path, how):
    _, out = _where_file(tmp_path)
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / ".rerun.json"))
    r = subprocess.run([sys.executable, "-c", _NO_FORK, how, *LOCAL, "t"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    zygote, _, cmd = _read_where(out)
    assert "provium.runner.zygote" in cmd, cmd  # spawned, and still a zygote: runners are forked
    assert gone(zygote)


# `dispatch` as the command calls it, then what is left of this process's children,
# whether a zygote was forked, and whether rich was imported for a report to a pipe.
_AFTER = """
import json, sys
from provium.scheduler import zygote_fork
forked = []
start = zygote_fork.start
def recorded():
    z = start()
    forked.append(z is not None)
    return z
zygote_fork.start = recorded
from provium.cli.main import dispatch
code = dispatch(sys.argv[1:], fork_zygote=True)
import psutil
print(json.dumps({"code": code, "forked": forked, "rich": "rich" in sys.modules,
                  "children": [p.name() for p in psutil.Process().children(recursive=True)]}))
"""


def _after(tmp_path: Path, *args: str) -> dict:
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / ".rerun.json"))
    r = subprocess.run([sys.executable, "-c", _AFTER, *args], cwd=tmp_path, env=env, capture_output=True,
                       timeout=120)
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def test_a_run_that_ends_before_dispatch_leaves_no_forked_zygote(tmp_path):
    write(tmp_path / "provium.toml", "this is not toml = = =\n")
    write(tmp_path / "t" / "a.test.lua", PASSING)
    out = _after(tmp_path, *LOCAL, "t")
    assert out["code"] == 2 and out["forked"] == [True]
    assert out["children"] == []


def test_a_report_to_a_pipe_needs_no_rich(tmp_path):
    write(tmp_path / "t" / "a.test.lua", PASSING)
    out = _after(tmp_path, *LOCAL, "t")
    assert out == {"code": 0, "forked": [True], "rich": False, "children": []}

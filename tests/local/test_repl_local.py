"""`provium repl` on the local backend with input from a pipe (the tmux tests in
tests/qemu drive it on a terminal): evaluation, printing, errors, exit()."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def repl(stdin: str, *args: str, cwd: str | None = None, profile: str | None = "linux") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-m", "provium.cli.main", "--vmm", "local", "repl",
                           *([profile] if profile else []), *args], cwd=cwd,
                          input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_repl_over_a_pipe():
    r = repl('1 + 1\nvm:run("printf hi").stdout\nx = {1, "a", k = {true}}\nx\n'
             'vm:run("printf \'a\\nb\\n\'").stdout\nnope()\nfor i = 1, 2 do\nprint(i)\nend\n'
             'json.encode({a = 1})\nvm:run("true")\nexit()\n1 + 1\n')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "provium repl — booting VM `repl` (profile `linux`)"
    assert lines[1].startswith("  ready: cid=") and lines[1].endswith("state=booted")
    body = lines[3:]
    assert body == ["2", '"hi"', '{1, "a", k = {true}}', "a", "b",
                    "error: repl:1: attempt to call a nil value (global 'nope')", "1", "2",
                    '"{\\"a\\":1}"', 'RunResult{status=exited, exit_code=0, stdout="", stderr=""}', "bye"]


def test_repl_ctrl_d_and_name():
    r = repl("vm:name()\n", "--name", "box")
    assert r.returncode == 0
    assert r.stdout.splitlines()[-2:] == ['"box"', "bye"]


def test_repl_from_a_fixture(tmp_path):
    (tmp_path / "provium.toml").write_text(f'[provium]\ncache_dir = "{tmp_path / "cache"}"\n')
    (tmp_path / "base.fixture.lua").write_text(
        'local vm = provium:vm("base", "linux"):boot()\n'
        f'vm:write_file("{tmp_path}/marker", "from the fixture")\n'
        "return vm:snapshot()\n")
    r = repl(f'vm:name(), vm:state()\nvm:read_file("{tmp_path}/marker")\n', "--fixture", "base",
             cwd=str(tmp_path), profile=None)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "provium repl — restoring fixture `base`"
    assert lines[-4:] == ['"fixture:base"', '"booted"', '"from the fixture"', "bye"]
    r = repl("", "--fixture", "nosuch", cwd=str(tmp_path), profile=None)
    assert r.returncode == 2 and "nosuch" in r.stderr and "Traceback" not in r.stderr

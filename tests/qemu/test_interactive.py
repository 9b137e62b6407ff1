"""`provium repl` and `provium console` driven as a person drives them: in a
terminal (a private tmux server), typing keys and reading the screen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from qemu_util import needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make sysdeps)")]

SRC = Path(__file__).resolve().parents[2] / "src"


class Terminal:
    """One tmux session on a server of its own (never touches anyone else's)."""

    def __init__(self, command: str, home: Path) -> None:
        # A socket of its own under the test's tmp dir: no file is left in /tmp/tmux-UID.
        self.server = str(home / f"tmux-{uuid.uuid4().hex[:8]}.sock")
        env = f"env HOME={home} PYTHONPATH={SRC} PROVIUM_NO_COLOR=1"
        # `; sleep` keeps the pane (and what it shows) after the program exits.
        self.tmux("new-session", "-d", "-x", "150", "-y", "50", f"{env} {command}; echo EXITED=$?; sleep 60")
        self.pid = int(self.tmux("list-panes", "-F", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.server, *args], check=True, capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "0", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "0", "-l", text)  # literally: `end` is not the End key
        self.keys("Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "0", "-S", "-200")

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            m = re.compile(pattern, re.MULTILINE).search(text, after)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"`{pattern}` not on the screen within {timeout}s:\n{text}")
            time.sleep(0.2)

    def qemus(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            try:
                if p.name().startswith("qemu-system") and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.server, "kill-server"], capture_output=True, check=False)
        Path(self.server).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path):
    made: list[Terminal] = []

    def make(command: str) -> Terminal:
        t = Terminal(command, tmp_path)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


PROVIUM = f"{sys.executable} -m provium.cli.main"


def test_repl_evaluates_interrupts_and_exits_cleanly(terminal, tmp_path):
    t = terminal(f"{PROVIUM} repl linux")
    t.wait_for(r"ready: cid=\d+ state=booted", timeout=120)
    t.wait_for(r"^provium>")
    qemus = t.qemus()
    assert len(qemus) == 1

    t.type('vm:run("uname -r").stdout')
    t.wait_for(r'^"\d+\.\d+\.\d+[^"]*\\n"$')

    t.type('vm:run("sleep 100")')
    time.sleep(1.5)
    started = time.monotonic()
    t.keys("C-c")
    m = t.wait_for(r"^.*error: .*interrupted: Ctrl-C$", timeout=20)
    assert time.monotonic() - started < 15
    t.wait_for(r"^provium>$", after=m.end())

    # The REPL and the VM carry on; tables and results read well; errors have a position.
    t.type('vm:state(), {1, 2, x = {y = "z"}}')
    t.wait_for(r'^"booted"\n\{1, 2, x = \{y = "z"\}\}$')
    t.type('vm:run("echo hi")')
    t.wait_for(r'^RunResult\{status=exited, exit_code=0, stdout="hi\\n", stderr=""\}$')
    t.type("nosuch.field")
    t.wait_for(r"^error: repl:1: attempt to index a nil value \(global 'nosuch'\)$")
    t.type("for i = 1, 2 do")
    t.type("print('line ' .. i)")
    t.type("end")
    t.wait_for(r"^line 1\nline 2$")

    t.keys("C-d")
    t.wait_for(r"^bye$")
    t.wait_for(r"^EXITED=0$", timeout=60)
    for q in qemus:
        assert not psutil.pid_exists(q.pid) or q.status() == psutil.STATUS_ZOMBIE
    assert (tmp_path / ".provium_history").read_text().count("uname -r") == 1


def test_console_is_the_guest_serial_port(terminal):
    t = terminal(f"{PROVIUM} console linux")
    t.wait_for(r"booting profile `linux` \(Ctrl-A X quits")
    t.wait_for(r"^/ #", timeout=120)  # the initramfs's shell on ttyS0
    qemus = t.qemus()
    assert len(qemus) == 1
    t.type("echo typed-$((6*7))")
    t.wait_for(r"^typed-42\r?$")
    t.keys("C-a", "x")
    t.wait_for(r"^EXITED=\d+$", timeout=30)
    for q in qemus:
        assert not psutil.pid_exists(q.pid) or q.status() == psutil.STATUS_ZOMBIE


def test_console_print_command_boots_nothing():
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([sys.executable, "-m", "provium.cli.main", "console", "linux", "--print-command",
                        "--", "-device", "virtio-rng-pci"], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("/") and "qemu-system-x86_64" in r.stdout.split()[0]
    assert "-serial mon:stdio" in r.stdout and r.stdout.rstrip().endswith("-device virtio-rng-pci")
    assert "qmp" not in r.stdout and "agent" not in r.stdout  # nothing to drive: no agent port, no QMP

"""On the local backend nothing the agent started outlives it: not when the agent
is SIGKILLed (setsid daemons included), not when a stopped agent's host goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from provium import vmm
from provium.config import load
from provium.host import VM, Session
from provium.host.errors import AgentGone


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def all_gone(pids, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def start_everything(vm, tmp_path) -> list[int]:
    """A background job, a setsid double-forked daemon and a run_async process; their pids."""
    pids = [int(vm.run("sleep 1000 >/dev/null 2>&1 & echo $!").stdout)]
    pidfile = tmp_path / "daemon.pid"
    vm.run(["setsid", "sh", "-c", f"sleep 1000 >/dev/null 2>&1 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}"])
    deadline = time.monotonic() + 5
    while not pidfile.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pids.append(int(pidfile.read_text()))
    proc = vm.run_async("sleep 1000")
    pids.append(proc.pid())
    vm._keep = proc  # a dropped Process is reaped: keep it for the test
    assert all(alive(p) for p in pids)
    return pids


def test_a_sigkilled_agent_takes_what_it_started_with_it(tmp_path):
    with Session(vmm.create("local"), load(None)) as s:
        vm = VM(s, "k", "linux").boot()
        agent = vm.instance.pid
        assert vm.syscall(39).ret == agent  # instance.pid is the agent that serves
        pids = start_everything(vm, tmp_path)
        os.kill(agent, signal.SIGKILL)
        assert all_gone(pids), [p for p in pids if alive(p)]
        with pytest.raises(AgentGone):
            vm.run("true")


def test_shutting_down_a_stopped_agent_leaves_nothing(tmp_path):
    with Session(vmm.create("local"), load(None)) as s:
        vm = VM(s, "st", "linux").boot()
        agent = vm.instance.pid
        pids = start_everything(vm, tmp_path) + [agent]
        os.kill(agent, signal.SIGSTOP)
        t0 = time.monotonic()
        vm.shutdown()
        assert time.monotonic() - t0 < 10
        assert all_gone(pids, 2), [p for p in pids if alive(p)]


HOST = textwrap.dedent("""
    import os, signal, sys, time
    from provium import vmm
    from provium.config import load
    from provium.host import VM, Session
    s = Session(vmm.create("local"), load(None))
    vm = VM(s, "h", "linux").boot()
    proc = vm.run_async("sleep 1000")  # kept: a dropped Process is reaped
    pids = [vm.instance.pid, int(vm.run("sleep 1000 >/dev/null 2>&1 & echo $!").stdout), proc.pid()]
    vm.run(["setsid", "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! > " + sys.argv[1] + ".tmp; mv "
            + sys.argv[1] + ".tmp " + sys.argv[1]])
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    os.kill(vm.instance.pid, signal.SIGSTOP)
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(1000)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_agent_is_not_orphaned_when_its_host_dies(tmp_path, sig):
    pidfile = tmp_path / "daemon.pid"
    host = subprocess.Popen([sys.executable, "-c", HOST, str(pidfile)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 3, "the host process did not start its VM"
        pids.append(int(pidfile.read_text()))
        assert all(alive(p) for p in pids), [p for p in pids if not alive(p)]
        host.send_signal(sig)
        host.wait(10)
        assert all_gone(pids), [p for p in pids if alive(p)]
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


STOPPED_FILE = """
local vm = provium:vm("s", "linux"):boot()
test("stops its agent", function(t)
  local agent = vm:syscall(39).ret
  local pids = {agent, vm:run("sleep 1000 >/dev/null 2>&1 & echo $!").stdout:match("%d+")}
  vm:run("setsid", {"sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! > PIDS.d; mv PIDS.d PIDS.s"})
  local f = io.open("PIDS", "w"); f:write(table.concat(pids, " ")); f:close()
  local stopper = vm:run_async("sh", {"-c", "sleep 0.3; kill -STOP " .. agent})
  local t0 = os.time() while os.time() - t0 < 60 do end
end)
"""


def test_provium_sigterm_with_a_stopped_local_agent_leaves_nothing(tmp_path):
    (tmp_path / "stop.test.lua").write_text(STOPPED_FILE.replace("PIDS", str(tmp_path / "pids")))
    env = dict(os.environ, PROVIUM_RERUN_STATE=str(tmp_path / "rr.json"))
    p = subprocess.Popen([sys.executable, "-m", "provium.cli.main", "--vmm", "local", "--no-progress",
                          "stop.test.lua"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pids").exists() or not (tmp_path / "pids.s").exists():
            assert time.monotonic() < deadline, "the test file never got going"
            time.sleep(0.05)
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        pids.append(int((tmp_path / "pids.s").read_text()))
        agent = pids[0]
        deadline = time.monotonic() + 10
        while open(f"/proc/{agent}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline, "the agent was never stopped"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert all_gone(pids), [q for q in pids if alive(q)]

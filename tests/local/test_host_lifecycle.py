"""VM lifecycle on the local backend: states, wrong-state errors, events, what the
local backend refuses, and that no agent process outlives its VM or its owner."""

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
from provium.host.errors import AgentGone, VmError, VmmFailure, WrongState
from provium.vmm.local import LocalInstance, LocalVmm


@pytest.fixture
def session():
    events = []
    s = Session(vmm.create("local"), load(None), emit=lambda kind, **p: events.append((kind, p)))
    s.events = events
    yield s
    s.close()


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True  # a zombie of some other parent: dead all the same
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_create_boot_shutdown_states_and_events(session):
    vm = VM(session, "life", "linux")
    assert (vm.state, vm.cid) == ("created", None)
    with pytest.raises(WrongState) as ei:
        vm.run("true")
    assert "not booted" in str(ei.value) and "cannot run" in str(ei.value)
    assert vm.boot() is vm
    assert vm.state == "booted" and vm.cid >= 3
    assert isinstance(vm.instance, LocalInstance)
    assert repr(vm) == f"vm(life state=booted cid={vm.cid})"
    with pytest.raises(WrongState) as ei:
        vm.boot()
    assert "booted" in str(ei.value) and "cannot boot" in str(ei.value)
    pid = vm.instance.pid
    vm.shutdown()
    assert vm.state == "shutdown" and gone(pid)
    vm.shutdown()  # idempotent
    with pytest.raises(WrongState) as ei:
        vm.read_file("/etc/hostname")
    assert "shutdown" in str(ei.value) and "cannot read_file" in str(ei.value)
    with pytest.raises(WrongState, match="create a new one"):
        vm.boot()
    kinds = [k for k, _ in session.events]
    assert kinds == ["vm_spawned", "vm_shutdown"]
    spawned = session.events[0][1]
    assert spawned == {"vm_name": "life", "profile": "linux", "memory_bytes": 512 << 20, "cid": vm.cid}
    assert session.events[1][1]["vm_name"] == "life" and session.events[1][1]["duration_ns"] > 0


def test_cids_are_never_reused(session):
    a = VM(session, "a", "linux").boot()
    b = VM(session, "b", "linux").boot()
    a.shutdown()
    c = VM(session, "c", "linux").boot()
    assert len({a.cid, b.cid, c.cid}) == 3


def test_unsupported_controls_say_not_yet_implemented(session):
    vm = VM(session, "ctl", "linux").boot()
    for op in (vm.pause, vm.reset, vm.wakeup, vm.power_button):
        with pytest.raises(VmmFailure) as ei:
            op()
        assert "not yet implemented" in str(ei.value) and "local" in str(ei.value)
    assert vm.state == "booted"
    with pytest.raises(WrongState, match="unexpected state for this op \\(cannot resume\\)"):
        vm.resume()
    assert vm.console_tail() == b""
    assert vm.run("true").ok()


def test_controls_before_boot_mention_the_state(session):
    vm = VM(session, "early", "linux")
    for op, action in ((vm.reset, "reset"), (vm.power_button, "power_button"), (vm.pause, "pause")):
        with pytest.raises(WrongState) as ei:
            op()
        assert "not booted" in str(ei.value) and f"cannot {action}" in str(ei.value)


def test_local_backend_refuses_guest_only_boot_options(session):
    for opts, key in (({"files": [{"path": "/etc/x", "content": "1"}]}, "files"),
                      ({"initial_time": 1_700_000_000}, "initial_time")):
        vm = VM(session, f"opt-{key}", "linux")
        with pytest.raises(VmmFailure) as ei:
            vm.boot(opts)
        assert f"boot option `{key}`" in str(ei.value) and "local backend" in str(ei.value)
        assert vm.state == "created"
    # Options with no meaning without a guest kernel are accepted; disks are host-side
    # objects there (tests/local/test_lua_disk.py).
    vm = VM(session, "sized", "linux", {"memory": "256M", "cpus": 2})
    vm.boot({"kernel_cmdline_append": "quiet", "rng_seed": 7})
    assert vm.memory_bytes == 256 << 20


def test_agent_death_marks_vm_dead(session):
    vm = VM(session, "fragile", "linux").boot()
    os.kill(vm.instance.pid, signal.SIGKILL)
    with pytest.raises(AgentGone) as ei:
        vm.run("true")
    assert "now dead" in str(ei.value)
    assert vm.state == "dead"
    with pytest.raises(WrongState, match="VM died; create a new one \\(cannot stat\\)"):
        vm.stat("/")
    vm.shutdown()
    assert vm.state == "shutdown"


def test_open_tail_survives_until_shutdown_then_reads_as_eof(session, tmp_path):
    vm = VM(session, "tails", "linux").boot()
    (tmp_path / "f").write_bytes(b"")
    t = vm.tail_file(str(tmp_path / "f"))
    assert vm.open_stream_count() == 1
    vm.shutdown()
    assert vm.open_stream_count() == 0
    assert t.next(1) is None and t.eof()
    t.close()


def test_shutdown_kills_what_the_agent_started(session):
    vm = VM(session, "owner", "linux").boot()
    p = vm.run_async(["sleep", "60"])
    pid = p.pid()
    agent = vm.instance.pid
    vm.shutdown()
    assert gone(agent) and gone(pid)


def test_session_close_reaps_every_agent():
    s = Session(LocalVmm(), load(None))
    pids = [VM(s, f"v{i}", "linux").boot().instance.pid for i in range(3)]
    s.close()
    assert all(gone(p) for p in pids)


OWNER = textwrap.dedent("""
    import sys, time
    from provium import vmm
    from provium.config import load
    from provium.host import Session, VM
    s = Session(vmm.create("local"), load(None))
    vm = VM(s, "orphan", "linux").boot()
    p = vm.run_async(["sleep", "60"])
    print(vm.instance.pid, p.pid(), flush=True)
    time.sleep(60)
""")


def test_sigkill_of_the_owner_leaves_no_agent_behind():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        line = owner.stdout.readline()
        agent_pid, child_pid = (int(x) for x in line.split())
        assert not gone(agent_pid, 0.05)
        owner.send_signal(signal.SIGKILL)
        owner.wait(5)
        assert gone(agent_pid), "the agent outlived its owner"
        assert gone(child_pid), "a process started by the agent outlived the agent's owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_agent_start_failure_is_a_clear_error(session, tmp_path):
    broken = Session(LocalVmm(python=str(tmp_path / "no-python")), load(None))
    try:
        with pytest.raises(VmError) as ei:
            VM(broken, "x", "linux").boot()
        assert "cannot start the local agent" in str(ei.value)
    finally:
        broken.close()
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    broken = Session(LocalVmm(python=str(fake)), load(None))
    try:
        with pytest.raises(VmError) as ei:
            VM(broken, "y", "linux").boot()
        assert "did not start" in str(ei.value) and "status 3" in str(ei.value)
    finally:
        broken.close()

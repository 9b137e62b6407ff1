"""The agent in the guest dying: the host learns it at once, and the OOM killer spares it.

QEMU keeps the host's end of the agent's chardev open when the agent exits, so
only its VSERPORT_CHANGE event tells the host (vmm/qemu/backend.py).  Before,
the next call waited for its timeout (300 s by default) and the VM stayed
`booted`.
"""

import time

import pytest

from provium.host.errors import AgentGone, WrongState

from qemu_util import needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]


def test_killed_agent_fails_the_next_call_fast_and_the_vm_is_dead(vm_factory):
    vm = vm_factory.booted("agent-killed")  # destructive: its own VM, not the module's shared one
    agent_pid = int(vm.run("echo $PPID").stdout)  # the shell's parent is the agent
    # SIGKILL it from a detached shell, while no call is in flight.
    vm.run(f"(sleep 0.5; kill -9 {agent_pid}) </dev/null >/dev/null 2>&1 &")
    killed = time.monotonic() + 0.5
    time.sleep(1.5)
    with pytest.raises(AgentGone) as e:
        vm.run("true", {"timeout": 30})
    took = time.monotonic() - killed
    assert took < 20, f"the host took {took:.1f}s to notice"
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert first.startswith("vm `agent") and "the agent in the guest died" in first
    assert first.endswith("(the VM is now dead)")
    console = msg.split("--- guest console (last bytes) ---\n", 1)[1]
    assert console.rstrip().endswith("--- end guest console ---")
    assert console.strip() != "--- end guest console ---"  # real console text from the guest
    assert vm.state == "dead"
    with pytest.raises(WrongState, match="VM died; create a new one .*the agent in the guest died"):
        vm.run("true")


def test_agent_is_immune_to_the_oom_killer_and_its_commands_are_not(vm_factory):
    vm = vm_factory.shared("agent")
    # The agent writes a child's 0 just after starting it (children.unprotect): a
    # command reading its own score at once could still see -1000, hence the sleep.
    out = vm.run("sleep 1; cat /proc/$PPID/oom_score_adj /proc/$$/oom_score_adj /proc/self/oom_score_adj").stdout
    assert out.split() == [b"-1000", b"0", b"0"]
    # A command started with a working directory takes the other spawn path.
    assert vm.run("sleep 1; cat /proc/$$/oom_score_adj", {"cwd": "/tmp"}).stdout.strip() == b"0"


def test_reset_is_not_taken_for_a_dead_agent(vm_factory):
    vm = vm_factory.shared("agent")
    vm.reset()
    time.sleep(0.5)  # a stray "port closed" event from the reset would land here
    assert vm.run("echo back").stdout == b"back\n"
    assert vm.state == "booted"
    # The new agent protected itself again.
    assert vm.run("cat /proc/$PPID/oom_score_adj").stdout.strip() == b"-1000"


def test_the_oom_killer_kills_the_runaway_command_not_the_agent(vm_factory):
    # Small guest RAM: `tail` of a stream with no newline keeps growing until the OOM killer acts.
    vm = vm_factory.booted("oom", opts={"memory": "192M"})
    r = vm.run("tail /dev/zero", {"timeout": 120})
    assert r.status == "signalled" and r.signal == 9
    assert b"Killed process" in vm.console_tail(1 << 16) and b"(tail)" in vm.console_tail(1 << 16)
    assert vm.run("echo alive").stdout == b"alive\n"
    assert vm.state == "booted"

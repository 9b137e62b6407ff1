"""Session: the loop thread, run/timeout/interrupt, events, close; VM state checks
that need no agent."""

import asyncio
import threading
import time

import pytest

from provium.config import Config, Profile
from provium.host import VM, Session
from provium.host.errors import ArgumentError, Interrupted, SessionError, VmError, WrongState
from provium.vmm.base import VmInstance, Vmm


class NoLaunchVmm(Vmm):
    """Refuses to launch: enough for everything that happens before boot."""

    name = "none"

    def __init__(self):
        self.closed = False

    async def launch(self, spec):
        from provium.vmm.base import VmmError

        raise VmmError(f"cannot launch `{spec.name}` here")

    async def close(self):
        self.closed = True


def config():
    return Config(profiles={"p": Profile("p", cmdline="x")})


@pytest.fixture
def session():
    s = Session(NoLaunchVmm(), config())
    yield s
    s.close()


def test_run_returns_results_and_raises_errors(session):
    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    assert session.run(add(2, 3)) == 5

    async def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        session.run(boom())


def test_run_timeout_cancels_the_coroutine(session):
    cancelled = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(SessionError, match="did not finish within 0.1s"):
        session.run(slow(), timeout=0.1)
    assert cancelled.wait(2)


def test_a_coroutines_own_timeout_error_is_not_mistaken_for_ours(session):
    async def inner_timeout():
        await asyncio.wait_for(asyncio.sleep(5), 0.01)

    with pytest.raises(asyncio.TimeoutError):
        session.run(inner_timeout(), timeout=5)


def test_interrupt_releases_blocked_callers(session):
    errors = []

    def blocked():
        try:
            session.run(asyncio.sleep(30))
        except Interrupted as exc:
            errors.append(str(exc))

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.1)
    assert session.interrupt("test timed out after 1s") == 1
    t.join(5)
    assert errors == ["interrupted: test timed out after 1s"]


def test_run_from_the_loop_thread_is_refused(session):
    async def nested():
        coro = asyncio.sleep(0)
        return session.run(coro)

    with pytest.raises(SessionError, match="own loop thread"):
        session.run(nested())


def test_emit_hook_and_close():
    seen = []
    vmm = NoLaunchVmm()
    s = Session(vmm, config(), emit=lambda kind, **p: seen.append((kind, p)))
    s.emit("vm_spawned", vm_name="a", cid=3)
    assert seen == [("vm_spawned", {"vm_name": "a", "cid": 3})]
    vm = VM(s, "a", "p")
    s.close()
    s.close()  # idempotent
    assert vmm.closed and vm.state == "shutdown"
    with pytest.raises(SessionError, match="session is closed"):
        s.run(asyncio.sleep(0))
    with pytest.raises(SessionError):
        VM(s, "b", "p")


def test_session_context_manager():
    with Session(NoLaunchVmm(), config()) as s:
        assert s.run(asyncio.sleep(0, result=7)) == 7
    assert s.closed


# ---- VM before boot -----------------------------------------------------------------------

def test_vm_created_state_and_wrong_state_errors(session):
    vm = VM(session, "a", "p", {"memory": "256M"})
    assert (vm.name, vm.profile, vm.state, vm.cid) == ("a", "p", "created", None)
    assert repr(vm) == "vm(a state=created cid=-)"
    with pytest.raises(WrongState) as ei:
        vm.run("true")
    assert "not booted" in str(ei.value) and "cannot run" in str(ei.value)
    with pytest.raises(WrongState, match="cannot read_file"):
        vm.read_file("/etc/hostname")
    with pytest.raises(WrongState, match="cannot pause"):
        vm.pause()
    assert vm.console_tail() == b""
    assert vm.is_quiescent() and vm.open_file_count() == 0 and vm.open_stream_count() == 0
    vm.shutdown()
    vm.shutdown()
    assert vm.state == "shutdown"
    with pytest.raises(WrongState, match="VM is shutdown; create a new one \\(cannot boot\\)"):
        vm.boot()


def test_vm_argument_errors_happen_before_any_launch(session):
    with pytest.raises(ArgumentError, match="unknown boot option `mem`"):
        VM(session, "a", "p", {"mem": 1})
    vm = VM(session, "b", "p")
    with pytest.raises(ArgumentError, match="unknown boot option `cpu`"):
        vm.boot({"cpu": 2})
    with pytest.raises(VmError, match="profile `nope` not found"):
        VM(session, "c", "nope")


def test_failed_launch_leaves_vm_created(session):
    vm = VM(session, "a", "p")
    with pytest.raises(VmError) as ei:
        vm.boot()
    assert str(ei.value) == "vm `a`: boot failed: vmm: cannot launch `a` here"
    assert vm.state == "created"


class OneShotInstance(VmInstance):
    backend = "fake"

    def __init__(self):
        self.cid = 42
        self.down = 0
        self.client = None

    async def shutdown(self):
        self.down += 1

    def alive(self):
        return self.down == 0


class OneShotVmm(Vmm):
    name = "fake"

    def __init__(self):
        self.specs = []
        self.instances = []

    async def launch(self, spec):
        self.specs.append(spec)
        inst = OneShotInstance()
        self.instances.append(inst)
        return inst


def test_boot_events_and_lifecycle_without_agent():
    events = []
    vmm = OneShotVmm()
    with Session(vmm, config(), emit=lambda k, **p: events.append((k, p)), default_memory=300 << 20) as s:
        vm = VM(s, "web", "p", {"cpus": 2})
        assert vm.boot({"kernel_cmdline_append": "quiet"}) is vm
        assert vm.state == "booted" and vm.cid == 42
        spec = vmm.specs[0]
        assert (spec.memory_bytes, spec.cpus, spec.kernel_cmdline_append) == (300 << 20, 2, "quiet")
        assert events == [("vm_spawned", {"vm_name": "web", "profile": "p", "memory_bytes": 300 << 20, "cid": 42})]
        with pytest.raises(WrongState, match="VM already booted \\(cannot boot\\)"):
            vm.boot()
        with pytest.raises(WrongState, match="already booted \\(cannot merge_boot_opts\\)"):
            vm.boot({"cpus": 1})
        with pytest.raises(VmError, match="pause is not yet implemented"):
            vm.pause()
        assert vm.state == "booted"
        vm.shutdown()
        vm.shutdown()
        assert vmm.instances[0].down == 1
        kinds = [k for k, _ in events]
        assert kinds == ["vm_spawned", "vm_shutdown"]
        assert events[1][1]["vm_name"] == "web" and events[1][1]["duration_ns"] > 0
        with pytest.raises(WrongState, match="VM is shutdown; create a new one \\(cannot run\\)"):
            vm.run("true")


def test_session_close_shuts_down_booted_vms():
    vmm = OneShotVmm()
    s = Session(vmm, config())
    a = VM(s, "a", "p").boot()
    b = VM(s, "b", "p")
    s.close()
    assert a.state == "shutdown" and b.state == "shutdown"
    assert vmm.instances[0].down == 1


class ResettableInstance(OneShotInstance):
    async def reset(self):
        self.resets = getattr(self, "resets", 0) + 1


class ResettableVmm(OneShotVmm):
    async def launch(self, spec):
        inst = ResettableInstance()
        self.instances.append(inst)
        return inst


def test_handles_from_before_a_reset_refuse_to_act():
    from provium.host.errors import HandleError
    from provium.host.file import File
    from provium.host.process import Process
    from provium.host.worker import Worker

    with Session(ResettableVmm(), config()) as s:
        vm = VM(s, "r", "p").boot()
        f, p, w = File(vm, 1, "/x"), Process(vm, 1), Worker(vm, 1)
        vm._registry.add_file(1, None)
        vm.reset()
        assert vm.state == "booted" and vm.generation == 1 and vm.open_file_count() == 0
        for op, what in ((lambda: f.read(1), "file `/x`"), (p.pid, "process proc#1"), (p.stdout_stream, "proc#1"),
                         (lambda: w.run("true"), "worker #1")):
            with pytest.raises(HandleError) as ei:
                op()
            assert what in str(ei.value) and "before its reset" in str(ei.value)
        f.close()  # no wire traffic for a stale handle; never raises
        p.close()
        w.close()

"""A QEMU guest whose agent never came back (a reset that timed out) is not alive.

Before, `alive()` said yes while the agent connection was None, so the VM stayed
`booted` and its next op crashed with AttributeError ('NoneType' has no 'call')
instead of the VM being `dead` with a clear WrongState."""

from types import SimpleNamespace

from provium.vmm.qemu.backend import QemuInstance


def _inst(inject_agent: bool, client=None) -> QemuInstance:
    inst = QemuInstance.__new__(QemuInstance)  # only what alive() reads
    inst._closed = False
    inst.proc = SimpleNamespace(poll=lambda: None)
    inst.client = client
    inst.spec = SimpleNamespace(profile=SimpleNamespace(inject_agent=inject_agent))
    return inst


def test_no_agent_connection_is_dead_only_where_an_agent_belongs():
    assert not _inst(inject_agent=True).alive()
    assert _inst(inject_agent=False).alive()
    assert _inst(inject_agent=True, client=SimpleNamespace(lost=None)).alive()
    assert not _inst(inject_agent=True, client=SimpleNamespace(lost=OSError("gone"))).alive()

"""Profiles people bring (docs/guests.md): the example profile built and booted with the agent
and without it (`inject_agent = false`, console only), and an empty `initrd` with the host kernel."""

from pathlib import Path

import pytest

from provium import image, vmm
from provium.config import Profile, load
from provium.host import Session
from provium.host.errors import NoAgent
from provium.image.kernel import find_kernel

from qemu_util import factory_for, needs_qemu

pytestmark = [pytest.mark.qemu, needs_qemu]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom-profile"


@pytest.fixture(scope="module")
def example_vms(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PROVIUM_BUILD_DIR", str(tmp_path_factory.mktemp("builds")))
    mp.chdir(EXAMPLE)  # inline profiles run their `build` from where provium runs
    cfg = load(EXAMPLE / "provium.toml", explicit=True)
    image.prepare(cfg, say=lambda line: None)
    with Session(vmm.create("qemu"), cfg) as s, factory_for(s) as factory:
        yield factory
    mp.undo()


def test_example_profile_boots_with_the_agent(example_vms):
    vm = example_vms.booted("tiny", "tiny")
    r = vm.run("cat /proc/1/cmdline; echo; ls /lib/modules")
    assert r.stdout.startswith(b"/bin/sh\0/init") or b"init" in r.stdout.split(b"\n")[0]
    assert b"virtio_console.ko" in r.stdout
    vm.shutdown()  # not needed by the others: memory back now


def test_inject_agent_false_boots_to_its_marker_and_the_console_works(example_vms):
    vm = example_vms.booted("plain", "tiny-console")
    c = vm.console()
    c.expect("tiny-init-ready", 5)  # the boot already waited for it
    c.write("echo $((6 * 7))-answered\n")
    c.expect("42-answered", 20)
    with pytest.raises(NoAgent, match=r"inject_agent = false.*`exec` cannot work"):
        vm.run("true")
    vm.shutdown()


def test_empty_initrd_with_the_host_kernel_runs_the_agent(session, vm_factory):
    kernel = find_kernel()
    profile = Profile(name="bare", kernel=str(kernel.path), initrd="", cmdline="console=ttyS0 quiet panic=-1",
                      memory=256 << 20)
    session.config.profiles["bare"] = profile
    vm = vm_factory.booted("bare", "bare")
    assert b"provium" in vm.read_file("/proc/1/cmdline")  # standalone: the agent itself is PID 1
    # No shell in such a guest (only what the overlay carries): argv runs without one.
    assert vm.run(["/provium/bin/busybox", "echo", "hi"]).stdout == b"hi\n"
    vm.shutdown()

"""Guests that never answer, QEMU that cannot start, and an owner killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from provium import vmm
from provium.config import Profile, load
from provium.host import VM, Session
from provium.host.errors import VmmFailure
from provium.image import initramfs
from provium.image.kernel import find_kernel

from qemu_util import needs_qemu, qemu_processes

pytestmark = [pytest.mark.qemu, needs_qemu]


def _config_with(**profiles):
    cfg = load(None)
    cfg.profiles.update(profiles)
    return cfg


def test_guest_that_never_answers_fails_boot_with_console_and_leaves_nothing(tmp_path):
    k = find_kernel()
    # The built-in initramfs without the agent, waiting for a console line that never
    # comes: /init runs, the boot never completes.
    silent = Profile(name="silent", kernel=str(k.path), initrd=str(initramfs.ensure(k)),
                     cmdline="console=ttyS0 panic=-1", inject_agent=False, agent_boot_timeout=6.0,
                     boot_marker="this line is never printed")
    with Session(vmm.create("qemu", scratch_root=str(tmp_path)), _config_with(silent=silent)) as s:
        vm = VM(s, "mute", "silent")
        started = time.monotonic()
        with pytest.raises(VmmFailure) as e:
            vm.boot()
        took = time.monotonic() - started
        msg = str(e.value)
        assert "vm `mute`: boot failed" in msg and "did not show the boot marker" in msg and "within 6s" in msg
        assert "--- guest console (last bytes) ---" in msg and "--- end guest console ---" in msg
        assert "Run /init as init process" in msg  # real console bytes from this guest
        assert took < 6 + 20  # the boot timeout bounds it (plus QEMU start and teardown)
        assert qemu_processes() == []
        assert list(tmp_path.glob("provium-qemu-*/vm-*")) == []  # scratch dir removed


def test_qemu_that_cannot_start_fails_fast_with_its_message(tmp_path):
    junk = tmp_path / "not-a-kernel"
    junk.write_bytes(b"this is not a kernel image" * 100)
    bad = Profile(name="bad", kernel=str(junk), cmdline="console=ttyS0", inject_agent=False, agent_boot_timeout=30.0)
    with Session(vmm.create("qemu"), _config_with(bad=bad)) as s:
        started = time.monotonic()
        with pytest.raises(VmmFailure) as e:
            VM(s, "junk", "bad").boot()
        assert time.monotonic() - started < 15
        assert "QEMU said:" in str(e.value) or "QEMU exited" in str(e.value)
        assert qemu_processes() == []


def test_conflicting_rdinit_refuses_to_boot():
    p = Profile(name="mine", kernel=str(find_kernel().path), cmdline="console=ttyS0 rdinit=/init")
    with Session(vmm.create("qemu"), _config_with(mine=p)) as s:
        with pytest.raises(VmmFailure, match="inject_agent = false"):
            VM(s, "r", "mine").boot()
        assert qemu_processes() == []


OWNER = textwrap.dedent("""
    import sys, time
    from provium import vmm
    from provium.config import load
    from provium.host import Session, VM
    s = Session(vmm.create("qemu", scratch_root=sys.argv[1]), load(None))
    vm = VM(s, "orphan-to-be", "linux").boot()
    print(vm.instance.pid, vm.instance.scratch, flush=True)
    time.sleep(600)
""")


def test_sigkill_of_the_owner_leaves_no_qemu(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        line = owner.stdout.readline().split()
        assert line, "the owner process did not boot its VM"
        qemu_pid, scratch = int(line[0]), Path(line[1].decode())
        assert psutil.pid_exists(qemu_pid) and scratch.is_dir()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(qemu_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"QEMU (pid {qemu_pid}) outlived its SIGKILLed owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    # The killed owner could not clean its scratch root; the next backend sweeps it.
    assert scratch.parent.is_dir()
    fresh = vmm.create("qemu", scratch_root=str(tmp_path))
    fresh._scratch_root()
    assert not scratch.parent.exists()

"""The `provium` logger hierarchy: one child per VM, timed steps, agent ops at DEBUG."""

from __future__ import annotations

import logging
import subprocess
import sys

from provium import log, vmm
from provium.config import load
from provium.host import VM, Session


def test_vm_logger_times_boot_and_shutdown_and_logs_each_agent_op(caplog):
    caplog.set_level(logging.DEBUG, logger="provium")
    with Session(vmm.create("local"), load(None)) as s:
        vm = VM(s, "logged", "linux")
        vm.boot()
        vm.run("true")
        vm.shutdown()
    mine = [r for r in caplog.records if r.name == "provium.vm.logged"]
    text = [r.getMessage() for r in mine]
    assert any(t.startswith("boot (profile linux) (finished in ") for t in text), text
    assert any(t.startswith("exec (") and t.endswith(" ms)") for t in text), text
    assert any(t.startswith("shutdown (finished in ") for t in text), text
    assert {r.levelname for r in mine if r.getMessage().startswith("exec")} == {"DEBUG"}
    assert {r.levelname for r in mine if r.getMessage().startswith("boot")} == {"INFO"}


def test_nothing_is_configured_unless_asked_and_other_loggers_are_untouched():
    code = ("import logging, provium.log as l, provium.vmm.qemu.qmp;"
            "print(logging.getLogger('provium').handlers, logging.getLogger('qemu.qmp').level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                         "PYTHONPATH": ":".join(sys.path)}, timeout=60)
    assert out.stdout.split() == ["[]", "0"], out.stderr


def test_a_bad_level_names_the_variable():
    import pytest

    from provium.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"PROVIUM_LOG: unknown log level `loud` \(valid: debug, info, warning, "
                                            r"error\)"):
        log.parse_level("loud")


def test_snapshot_and_restore_are_timed_for_vms_and_labs(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="provium")
    with Session(vmm.create("local"), load(None)) as s:
        lab = s.lab("loglab")
        vm = lab.vm("snappy", "linux").boot()
        snap = vm.snapshot(str(tmp_path / "one.snap"))
        vm.restore(snap)
        lab_snap = lab.snapshot(str(tmp_path / "labdir"))
        copy = s.lab("logcopy")
        copy.restore(lab_snap)
        lab.close()
        copy.close()

    def texts(name):
        return [r.getMessage() for r in caplog.records if r.name == name and r.levelname == "INFO"]

    vm_text = texts("provium.vm.snappy")
    assert any(t.startswith(f"snapshot to {tmp_path}/one.snap (finished in ") for t in vm_text), vm_text
    assert any(t.startswith(f"restore from {tmp_path}/one.snap (in place) (finished in ") for t in vm_text), vm_text
    assert any(t.startswith(f"snapshot to {tmp_path}/labdir/snappy.snap (finished in ") for t in vm_text), vm_text
    assert texts("provium.lab.loglab") == [texts("provium.lab.loglab")[0]]
    assert texts("provium.lab.loglab")[0].startswith(f"snapshot of 1 VM(s) to {tmp_path}/labdir (finished in ")
    [restored] = texts("provium.lab.logcopy")
    assert restored.startswith(f"restore of 1 VM(s) from {tmp_path}/labdir (finished in ")


def test_a_failed_step_is_logged_with_its_time(caplog):
    caplog.set_level(logging.INFO, logger="provium")
    import pytest

    with pytest.raises(RuntimeError), log.timed(log.lab_logger("x"), "restore"):
        raise RuntimeError("boom")
    [rec] = [r for r in caplog.records if r.name == "provium.lab.x"]
    assert rec.getMessage().startswith("restore failed after ") and rec.getMessage().endswith(" s: boom")

"""Pre-flight checks (no VM boots; the KVM verdict is stubbed)."""

import pytest

from provium import preflight
from provium.config import Profile, load
from provium.vmm.qemu import accel


@pytest.fixture
def no_kvm(monkeypatch):
    monkeypatch.setattr(accel, "kvm_openable", lambda: (False, "/dev/kvm does not exist"))


def test_tcg_fallback_is_announced_once(no_kvm, monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "_announced", set())
    said = []
    cfg = load(None)
    cfg.cache_dir = str(tmp_path / "cache")
    notes = preflight.run(cfg, say=said.append)
    assert len(said) == 1 and "guests run under TCG" in said[0] and "/dev/kvm does not exist" in said[0]
    preflight.run(cfg, say=said.append)
    assert len(said) == 1 and notes == preflight.check(cfg)[1]
    # a later run (a new process): the verdict is cached, so is the fact it was said
    monkeypatch.setattr(preflight, "_announced", set())
    preflight.run(cfg, say=said.append)
    assert len(said) == 1


def test_local_backend_needs_nothing(monkeypatch):
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    assert preflight.run(load(None), vmm="local", say=lambda s: None) == []


def test_missing_qemu_and_kvm_requested_are_actionable(no_kvm, monkeypatch):
    real_which = preflight.shutil.which
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None if name.startswith("qemu") else real_which(name))
    with pytest.raises(preflight.PreflightError) as e:
        preflight.run(load(None), accel="kvm", say=lambda s: None)
    msg = str(e.value)
    assert "pre-flight found 2 problems" in msg
    assert "qemu-system-x86_64: not found on PATH\n  → apt-get install qemu-system-x86" in msg
    assert 'KVM: requested (accel = "kvm"), but /dev/kvm does not exist' in msg


def test_profile_files_are_checked_unless_built(no_kvm, tmp_path):
    cfg = load(None)
    cfg.profiles["mine"] = Profile(name="mine", kernel="bz", initrd="rd", cmdline="x", base_dir=str(tmp_path))
    cfg.profiles["dyn"] = Profile(name="dyn", kernel="out/bz", cmdline="x", build="make", base_dir=str(tmp_path))
    (tmp_path / "bz").write_bytes(b"k")
    with pytest.raises(preflight.PreflightError) as e:
        preflight.run(cfg, say=lambda s: None)
    msg = str(e.value)
    assert "profile `mine`: initrd" in msg and "does not exist" in msg
    assert "dyn" not in msg and "kernel `" not in msg

"""Choosing KVM or TCG for `accel = "auto"`.

`/dev/kvm` opening is not enough: on some hosts (nested VMs) KVM_CREATE_VM works
but every guest hangs.  So "auto" means KVM only if a probe guest (the kernel
alone, which boots to its "no root" panic and exits thanks to panic=-1 and
-no-reboot) gets that far under KVM within a short timeout.  The verdict is kept
on disk per (kernel, QEMU version) for a day, under a lock so concurrent runners
probe once.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from ...image import cache
from . import process

PROBE_TIMEOUT = 3.0
VERDICT_TTL = 24 * 3600
PROBE_MARKERS = (b"Kernel panic", b"VFS:", b"Run /", b"Linux version")


def kvm_openable() -> tuple[bool, str]:
    """(usable so far, why not)."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist (no KVM module loaded, or not exposed to this VM/container)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened: {exc.strerror} (is this user in the `kvm` group?)"
    os.close(fd)
    return True, ""


@functools.lru_cache(maxsize=None)
def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.splitlines() or ["unknown"])[0].strip()


def _probe(qemu: str, kernel: Path, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="provium-kvm-probe-") as d:
        log = Path(d) / "console.log"
        argv = [qemu, "-M", "q35,accel=kvm", "-cpu", "host", "-m", "256M", "-smp", "1", "-nodefaults",
                "-no-reboot", "-display", "none", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1 loglevel=4", "-serial", f"file:{log}"]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=process.pdeathsig_preexec())
        except OSError as exc:
            return False, f"could not start {qemu}: {exc}"
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return False, f"a KVM guest did not boot within {timeout:g}s (KVM present but not working)"
        data = log.read_bytes() if log.exists() else b""
        if any(m in data for m in PROBE_MARKERS):
            return True, ""
        first = (err or b"").decode(errors="replace").strip().splitlines()
        return False, "the KVM probe guest failed" + (f": {first[0]}" if first else "")


_known: dict[str, tuple[str, str]] = {}


def resolve(requested: str, *, qemu: str, kernel: Path, cache_dir=None) -> tuple[str, str]:
    """("kvm" | "tcg", why not kvm).  `requested` is "auto", "kvm" or "tcg"; only "auto" probes.

    Blocking (a probe takes up to PROBE_TIMEOUT): call it off the event loop.
    """
    if requested in ("kvm", "tcg"):
        return requested, ""
    ok, why = kvm_openable()
    if not ok:
        return "tcg", why
    key = cache.Hasher("kvm-probe").add("qemu", qemu_version(qemu).encode()).add_file("kernel", kernel).hexdigest()
    if key in _known:
        return _known[key]
    _known[key] = verdict = _resolve_on_disk(key, qemu, kernel, cache_dir)
    return verdict


def _resolve_on_disk(key: str, qemu: str, kernel: Path, cache_dir) -> tuple[str, str]:
    d = cache.image_dir(cache_dir).parent
    verdict_file = d / "kvm-probe.json"
    with open(d / "kvm-probe.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known = json.loads(verdict_file.read_text())
        except (OSError, ValueError):
            known = {}
        v = known.get(key)
        if v and time.time() - v.get("at", 0) < VERDICT_TTL:
            return ("kvm" if v["kvm"] else "tcg"), v.get("why", "")
        works, why = _probe(qemu, kernel, PROBE_TIMEOUT)
        known = {k: e for k, e in known.items() if time.time() - e.get("at", 0) < VERDICT_TTL}
        known[key] = {"kvm": works, "why": why, "at": time.time()}
        cache.atomic_write(verdict_file, json.dumps(known, indent=1).encode())
    return ("kvm" if works else "tcg"), why

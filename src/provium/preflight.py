"""Host checks before a run boots real guests (skipped with --no-preflight and for --vmm local).

    run(config, vmm="qemu", accel=None)   raises PreflightError listing every problem;
                                          announces once when guests will run under TCG

Each problem reads `<what>: <detail>` and then `  → <what to do>`.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Config, Profile
from .errors import HostSetupError


class PreflightError(HostSetupError):
    """The host cannot run the requested guests; the message says how to fix it."""


@dataclass
class Problem:
    what: str
    detail: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}\n  → {self.fix}"


_announced: set[str] = set()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _profile_problems(p: Profile) -> list[Problem]:
    from .image import ImageError
    from .image.initramfs import find_busybox
    from .image.kernel import find_kernel

    out: list[Problem] = []
    if p.builtin and not p.kernel:
        try:
            find_kernel()
        except ImageError as exc:
            detail, _, fix = str(exc).partition("\n  → ")
            out.append(Problem(f"profile `{p.name}`", detail.split(": ", 1)[-1], fix or "install a kernel package"))
        try:
            find_busybox()
        except ImageError:
            out.append(Problem(f"profile `{p.name}`", "no statically linked busybox on this host",
                               "apt-get install busybox-static"))
        return out
    if p.build:
        return out  # its files appear when the build command runs, after these checks
    for key in ("kernel", "initrd", "cmdline_file", "agent_overlay_path"):
        value = getattr(p, key)
        if not value:
            if key == "kernel":
                out.append(Problem(f"profile `{p.name}`", "no `kernel` set", "set `kernel = \"path/to/bzImage\"`"))
            continue
        path = p.resolve(value)
        if not path.is_file():
            out.append(Problem(f"profile `{p.name}`", f"{key} `{path}` does not exist",
                               f"fix the `{key}` path in the profile (relative paths start at the config's directory)"))
        elif not os.access(path, os.R_OK):
            out.append(Problem(f"profile `{p.name}`", f"{key} `{path}` is not readable by this user",
                               f"chmod a+r {path}, or run provium as a user that can read it"))
    return out


def _probe_kernel(config: Config) -> Path | None:
    from .image import ImageError
    from .image.kernel import find_kernel

    for p in config.profiles.values():
        if not p.builtin and p.kernel and not p.build:
            k = p.resolve(p.kernel)
            if k is not None and k.is_file() and os.access(k, os.R_OK):
                return k
    try:
        return find_kernel().path
    except ImageError:
        return None


def check(config: Config, vmm: str = "qemu", accel: str | None = None) -> tuple[list[Problem], list[str]]:
    """(problems, notes) for running `config`'s guests on `vmm`."""
    if vmm != "qemu":
        return [], []
    problems: list[Problem] = []
    notes: list[str] = []
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        problems.append(Problem("qemu-system-x86_64", "not found on PATH",
                                "apt-get install qemu-system-x86 (or run with --vmm local, which boots no VM)"))
    if not shutil.which("ldd"):
        problems.append(Problem("ldd", "not found on PATH (needed to pack Python into the guest agent)",
                                "apt-get install libc-bin"))
    for p in sorted(config.profiles.values(), key=lambda p: p.name):
        problems += _profile_problems(p)

    from .vmm.qemu.accel import kvm_openable, resolve

    wanted = {accel} if accel else {p.accel for p in config.profiles.values()}
    ok, why = kvm_openable()
    if ok and qemu and wanted & {"kvm", "auto"}:
        kernel = _probe_kernel(config)
        if kernel is not None:
            chosen, why = resolve("auto", qemu=qemu, kernel=kernel, cache_dir=config.cache_dir)
            ok = chosen == "kvm"
    if "kvm" in wanted and not ok:
        problems.append(Problem("KVM", f"requested (accel = \"kvm\"), but {why}",
                                'use accel = "auto" or "tcg" (or --accel tcg) to run under emulation'))
    if "auto" in wanted and not ok:
        notes.append(f"provium: KVM is not usable ({why}); guests run under TCG "
                     "(software emulation: slower, but complete)")
    return problems, notes


def _first_time(note: str, config: Config) -> bool:
    """True once per note per verdict lifetime (a day), across runs.

    The KVM notice is worth reading once, not at the top of every run: the
    notes already said are remembered beside the cached KVM verdict, and said
    again when that verdict expires (it is then probed again)."""
    import hashlib
    import json
    import time

    from .fsutil import atomic_write
    from .image import cache
    from .vmm.qemu.accel import VERDICT_TTL

    try:
        path = cache.image_dir(config.cache_dir).parent / "notices.json"
        try:
            seen = json.loads(path.read_text())
            if not isinstance(seen, dict):
                seen = {}
        except (OSError, ValueError):
            seen = {}
        now = time.time()
        key = hashlib.sha256(note.encode()).hexdigest()[:16]
        at = seen.get(key)
        if isinstance(at, (int, float)) and now - at < VERDICT_TTL:
            return False
        seen = {k: v for k, v in seen.items() if isinstance(v, (int, float)) and now - v < VERDICT_TTL}
        seen[key] = now
        atomic_write(path, json.dumps(seen).encode(), mode=0o644)
    except OSError:
        return True  # no cache to remember it in: say it
    return True


def run(config: Config, vmm: str = "qemu", accel: str | None = None, *,
        say: Callable[[str], None] = _say) -> list[str]:
    """Check the host; raise PreflightError with every problem.  Returns the notes announced."""
    problems, notes = check(config, vmm, accel)
    for n in notes:
        if n not in _announced:
            _announced.add(n)
            if _first_time(n, config):
                say(n)
    if problems:
        head = "pre-flight found a problem" if len(problems) == 1 else f"pre-flight found {len(problems)} problems"
        raise PreflightError(head + ":\n" + "\n".join(str(p) for p in problems))
    return notes

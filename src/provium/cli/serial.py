"""`provium console PROFILE`: a fresh guest with its serial port on this terminal.

No agent and no Lua: QEMU runs in the foreground with `-serial mon:stdio`
(Ctrl-A X quits, Ctrl-A C switches to QEMU's monitor).  The command line is
the one the QEMU backend would use for the profile (`vmm/qemu/argv.py`), with
the console on the terminal instead of a socket, so what boots here is what
tests boot.  QEMU dies with provium (PR_SET_PDEATHSIG), like every guest.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import image
from ..config import Config, Profile
from ..errors import ProviumError, VmmError
from ..vmm.qemu import accel as accel_mod
from ..vmm.qemu import argv as argv_mod
from ..vmm.qemu.backend import DEFAULT_QEMU, tcg_cmdline
from ..vmm.qemu.process import pdeathsig_preexec

DEFAULT_MEMORY = 512 << 20


class ConsoleCommandError(VmmError):
    """`provium console` cannot start the guest (message says why and what to do)."""


def profile_for(cfg: Config, name: str) -> Profile:
    try:
        return cfg.profile(name)
    except ProviumError as exc:
        raise ConsoleCommandError(str(exc)) from exc


def qemu_command(cfg: Config, profile_name: str, *, scratch: Path, memory: int = DEFAULT_MEMORY, cpus: int = 1,
                 cmdline: str | None = None, agent: bool = False, qemu: str | None = None,
                 accel: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The QEMU argv for an interactive boot of `profile_name` (builds the images it needs)."""
    profile = dataclasses.replace(profile_for(cfg, profile_name), inject_agent=agent)
    if not agent and profile.initrd is None and not profile.builtin:
        raise ConsoleCommandError(f"profile `{profile_name}` has no initrd: without one the kernel has nothing "
                                  "to run (pass --agent to boot provium's agent as init)")
    binary = shutil.which(qemu or DEFAULT_QEMU)
    if binary is None:
        raise ConsoleCommandError(f"`{qemu or DEFAULT_QEMU}` not found on PATH (apt-get install qemu-system-x86)")
    try:
        images = image.compose(profile, kernel_cmdline=cmdline, scratch=scratch)
    except ProviumError as exc:
        raise ConsoleCommandError(str(exc)) from exc
    requested = accel or profile.accel or "auto"
    chosen, _why = accel_mod.resolve(requested, qemu=binary, kernel=images.kernel)
    line = tcg_cmdline(images.cmdline, machine=profile.machine, accel=chosen)
    cfg_q = argv_mod.QemuConfig(
        qemu=binary, machine=profile.machine, accel=chosen, memory_bytes=memory, cpus=cpus,
        kernel=images.kernel, initrd=images.initrd, cmdline=line, scratch=scratch,
        hotplug_ports=0, extra=list(extra or []), stdio_console=True, agent_port=agent,
        disks=_root_disk(profile, scratch, cfg.cache_dir))
    return argv_mod.build(cfg_q)


def _root_disk(profile, scratch: Path, cache_dir) -> list:
    """A distro profile's root: its image behind a qcow2 overlay in the scratch directory."""
    if not profile.distro:
        return []
    from ..image import debian
    from ..vmm.base import DiskSpec

    try:
        base = debian.ensure(profile.packages, cache_dir)
    except ProviumError as exc:
        raise ConsoleCommandError(str(exc)) from exc
    ov = scratch / "rootfs.qcow2"
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(ov)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConsoleCommandError(f"profile `{profile.name}`: creating the root disk's overlay failed: "
                                  f"{proc.stderr.strip()}")
    return [DiskSpec(id=debian.ROOT_SERIAL, image=str(ov), format="qcow2")]


def run(cfg: Config, profile_name: str, *, print_command: bool = False, **kw) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="provium-console-"))
    try:
        argv = qemu_command(cfg, profile_name, scratch=scratch, **kw)
        if print_command:
            print(shlex.join(argv))
            if profile_for(cfg, profile_name).distro:
                print(f"provium: the root overlay `{scratch / 'rootfs.qcow2'}` in this command is removed as provium "
                      "exits; make your own with `qemu-img create -f qcow2 -b IMAGE -F raw FILE` (the image: "
                      "`provium prepare " + profile_name + "`)", file=sys.stderr)
            return 0
        print(f"provium console — booting profile `{profile_name}` (Ctrl-A X quits, Ctrl-A C for monitor)",
              file=sys.stderr, flush=True)
        # Foreground, on this terminal: QEMU reads the keys (its own group would not get the tty).
        proc = subprocess.Popen(argv, cwd=str(scratch), preexec_fn=pdeathsig_preexec(),  # noqa: PLW1509
                                close_fds=True)  # (async-signal-safe prctl only; see vmm/qemu/process.py)
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                continue  # Ctrl-C belongs to the guest (QEMU has the terminal in raw mode)
        return 0 if rc == 0 else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

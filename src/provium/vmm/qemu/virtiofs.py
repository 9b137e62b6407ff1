"""Host directory shares: one `virtiofsd` per share, a vhost-user-fs device per share.

QEMU 7.2 ships the C virtiofsd at /usr/lib/qemu/virtiofsd (measured working under
TCG: notes/machine-facts.md).  vhost-user needs the guest's RAM shared with the
daemon, so a VM with shares gets `share=on` RAM (our /dev/shm file, else memfd).

Ownership: the QemuInstance owns its daemons and stops them when it shuts down or
is killed; each is spawned with PR_SET_PDEATHSIG (process.spawn), so it dies with
the runner even on SIGKILL, and in its own process group.  Its socket lives in
the VM's scratch directory, removed with it.

This virtiofsd has no read-only mode: `readonly` is the guest's mount option
(`-o ro`), which stops the guest's programs, not a guest root that remounts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import VmmError
from ..base import ShareSpec
from . import process

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
START_TIMEOUT = 10.0
STOP_GRACE = 2.0


@dataclass
class Daemon:
    share: ShareSpec
    socket: Path
    proc: subprocess.Popen
    log: Path


def binary() -> Path:
    if not VIRTIOFSD.is_file() or not os.access(VIRTIOFSD, os.X_OK):
        raise VmmError(f"shares: `{VIRTIOFSD}` not found (it ships with QEMU)\n  → apt-get install qemu-system-x86")
    return VIRTIOFSD


async def start(shares: list[ShareSpec], scratch: Path) -> list[Daemon]:
    """Start one daemon per share and wait for its socket; on any failure stop those started."""
    started: list[Daemon] = []
    try:
        for i, s in enumerate(shares):
            sock = scratch / f"vfs{i}.sock"
            log = scratch / f"virtiofsd{i}.log"
            argv = [str(binary()), f"--socket-path={sock}", "-o", f"source={s.host}", "-o", "cache=auto"]
            d = Daemon(s, sock, process.spawn(argv, stderr_path=log, cwd=scratch), log)
            started.append(d)
            await _wait_socket(d)
    except BaseException:
        await stop(started)
        raise
    return started


async def _wait_socket(d: Daemon) -> None:
    # Polled (20 ms): virtiofsd makes its socket once it has checked its source
    # directory, and nothing but inotify signals that.  Handing it a socket we bound
    # ourselves (`--fd`) would remove the wait but hide a daemon's start-up error
    # (bad source, no permission) behind QEMU's vague vhost-user failure.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while not d.socket.exists():
        if d.proc.poll() is not None or loop.time() >= deadline:
            said = d.log.read_bytes()[-1500:].decode("utf-8", "replace").strip() if d.log.exists() else ""
            why = f"exited with status {d.proc.returncode}" if d.proc.poll() is not None else \
                f"made no socket within {START_TIMEOUT:g}s"
            raise VmmError(f"share `{d.share.host}` → `{d.share.guest}`: virtiofsd {why}"
                           + (f"\nvirtiofsd said: {said}" if said else ""))
        await asyncio.sleep(0.02)


async def stop(daemons: list[Daemon]) -> None:
    """SIGTERM, then SIGKILL after a grace period; reaps every daemon."""
    for d in daemons:
        if d.proc.poll() is None:
            try:
                d.proc.terminate()
            except ProcessLookupError:
                pass
    for d in daemons:
        if await process.wait_exit(d.proc, STOP_GRACE) is None:
            await process.kill(d.proc)


def argv(daemons: list[Daemon], pci: bool) -> list[str]:
    dev = "vhost-user-fs-pci" if pci else "vhost-user-fs-device"
    out: list[str] = []
    for i, d in enumerate(daemons):
        sock = str(d.socket).replace(",", ",,")
        out += ["-chardev", f"socket,id=vfs{i},path={sock}",
                "-device", f"{dev},queue-size=1024,chardev=vfs{i},tag={d.share.tag}"]
    return out

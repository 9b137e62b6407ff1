"""Mount a VM's host directory shares in the guest once it has booted (the VMM attached them).

The mount runs through the agent with the static busybox every agent overlay carries,
so it works in any guest with the agent, whatever its userland.  fuse and virtiofs
are loaded first when the kernel lacks them: from the built-in image's
/lib/modules/provium/, else with the guest's own modprobe.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from ..vmm.base import ShareSpec
from .errors import VmmFailure

if TYPE_CHECKING:
    from .vm import VM

BUSYBOX = "/provium/bin/busybox"  # image/overlay.py
MOUNT_TIMEOUT = 30.0

LOAD = """b={bb}
if ! $b grep -qw virtiofs /proc/filesystems; then
  for m in fuse virtiofs; do
    if [ -e /lib/modules/provium/$m.ko ]; then $b insmod /lib/modules/provium/$m.ko 2>/dev/null
    else $b modprobe $m 2>/dev/null; fi
  done
fi
$b grep -qw virtiofs /proc/filesystems || {{ echo "the guest kernel has no virtiofs (module virtiofs.ko not found)" >&2; exit 1; }}
"""


def script(shares: list[ShareSpec]) -> str:
    lines = [LOAD.format(bb=BUSYBOX)]
    for s in shares:
        opts = "-o ro " if s.readonly else ""
        g = shlex.quote(s.guest)
        lines.append(f"$b mkdir -p {g} && $b mount -t virtiofs {opts}{s.tag} {g} || exit 1\n")
    return "".join(lines)


async def mount_all(vm: "VM", shares: list[ShareSpec]) -> None:
    """Mount every share; on failure the VM is shut down and the boot fails with the reason."""
    from .execargs import build_command
    from .results import RunResult

    c = build_command("shares", [BUSYBOX, "sh", "-c", script(shares)], {"timeout": MOUNT_TIMEOUT})
    reply = await vm._acall(c.exec_args())
    why = None
    if not reply.ok:
        why = str(reply.value)
    else:
        res = RunResult.from_exec(reply.value)
        if res.exit_code != 0:
            why = res.stderr.decode("utf-8", "replace").strip() or f"exit code {res.exit_code}"
    if why is not None:
        try:
            await vm.ashutdown()
        except Exception:  # noqa: BLE001 - the mount failure is the error to report
            pass
        raise VmmFailure(f"vm `{vm.name}`: boot failed: mounting its host directory shares failed: {why}")


def snapshot_refusal(vm_name: str, shares: list[ShareSpec]) -> str:
    listed = ", ".join(f"`{s.host}` → `{s.guest}`" for s in shares)
    return (f"vm:snapshot() failed for `{vm_name}`: it has host directory shares ({listed}); QEMU marks "
            "virtiofs devices (vhost-user-fs) unmigratable, so a VM with a share cannot be snapshotted "
            "(boot the VM to snapshot, or the fixture, without `shares`)")

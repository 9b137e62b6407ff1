"""The agent overlay: an uncompressed cpio (see initramfs.py) appended to any initrd that makes it run our agent.

It carries `/sbin/provium-agent` (a script for the bundled static busybox), the
busybox, and the Python runtime and agent under /provium.  The kernel is told
`rdinit=/sbin/provium-agent`; the script then decides:

* chain mode (we are PID 1 and the initrd has an /init): start the agent in the
  background and exec /init, so the guest's own init keeps PID 1.  Nothing is
  mounted here: the real init mounts, and may `switch_root`, which would fail
  with EBUSY if we had mounted anything first;
* standalone (no /init: the overlay is the whole initrd, or the initrd only
  carries modules): mount /dev, /proc, /sys and /tmp ourselves, load the virtio
  console driver if it is a module there, and exec the agent as PID 1 (it reaps
  orphans then).

The agent re-executes itself for workers with the argv in $PROVIUM_AGENT_EXEC.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from . import cache, runtime
from .cpio import CpioWriter
from .initramfs import find_busybox

AGENT_PATH = "/sbin/provium-agent"
BUSYBOX = "/provium/bin/busybox"

SCRIPT = """#!{busybox} sh
# provium agent launcher (see provium/image/overlay.py)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PROVIUM_AGENT_EXEC={exec_json}
x=  # PROVIUM_AGENT_DEBUG=importtime on the kernel cmdline profiles the agent's imports
[ "$PROVIUM_AGENT_DEBUG" = importtime ] && x="-X importtime"
if [ "$$" = 1 ] && [ -e /init ] && [ "$0" != /init ]; then
    {guest} &
    exec /init "$@"
    echo "provium-agent: exec /init failed" >&2
    exit 1
fi
b={busybox}
$b mkdir -p /dev /proc /sys /tmp
$b mount -t devtmpfs devtmpfs /dev || echo "provium-agent: mount /dev failed" >&2
$b mount -t proc proc /proc || echo "provium-agent: mount /proc failed" >&2
$b mount -t sysfs sysfs /sys || echo "provium-agent: mount /sys failed" >&2
$b mount -t tmpfs -o mode=1777 tmpfs /tmp || echo "provium-agent: mount /tmp failed" >&2
# Our port needs virtio_console: load it (and a transport) if the initrd carries them
# as modules: in the order of /lib/modules/provium/order (the segment provium adds for
# a profile with a host kernel and no initrd, see initramfs.modules_segment), or under
# /lib/modules/<release>/ with a modules.dep; built-in drivers make this a no-op.
[ -e /lib/modules/provium/order ] && for m in $($b cat /lib/modules/provium/order); do
    $b insmod /lib/modules/provium/$m.ko; done
[ -e /lib/modules/$($b uname -r)/modules.dep ] && $b modprobe -qa virtio_pci virtio_mmio virtio_console
exec {guest}
"""


def launcher_script(rt: runtime.Runtime) -> str:
    exec_argv = rt.argv("provium.agent.__main__:main")
    argv = rt.argv("provium.agent.guest:main")
    # $x (unquoted: empty, or two words) goes right after the interpreter's path
    guest = " ".join([*(shlex.quote(a) for a in argv[:4]), "$x", *(shlex.quote(a) for a in argv[4:])])
    return SCRIPT.format(busybox=BUSYBOX, exec_json=shlex.quote(json.dumps(exec_argv, separators=(",", ":"))),
                         guest=guest)


def build(busybox: bool = True) -> bytes:
    """The overlay; without its busybox when `busybox` is false, for an initrd that has
    /provium/bin/busybox already (the built-in one: initramfs.OVERLAY_BUSYBOX)."""
    rt = runtime.collect()
    w = CpioWriter()
    for d in ("dev", "proc", "sys", "tmp", "sbin"):
        w.add_dir(d)
    w.add_dir("tmp", 0o1777)
    # In chain mode Python starts before the guest's init has mounted /dev, and it
    # needs /dev/urandom when the kernel's entropy pool is not ready yet (always, this
    # early under TCG): "Fatal Python error: _Py_HashRandomization_Init".  Nodes in
    # the rootfs work from the start; a devtmpfs mounted later simply covers them.
    w.add_chardev("dev/null", 1, 3, 0o666)
    w.add_chardev("dev/random", 1, 8, 0o666)
    w.add_chardev("dev/urandom", 1, 9, 0o666)
    w.add_chardev("dev/console", 5, 1, 0o600)
    if busybox:
        w.add_file(BUSYBOX, find_busybox().read_bytes(), 0o755)
    for path, (data, mode) in sorted(rt.files.items()):
        w.add_file(path, data, mode)
    w.add_file(AGENT_PATH, launcher_script(rt).encode(), 0o755)
    return bytes(w)


def cache_key(busybox: bool = True) -> str:
    h = cache.Hasher("agent-overlay" if busybox else "agent-overlay-no-busybox")
    for f in (Path(__file__), Path(__file__).with_name("cpio.py")):
        h.add(f.name, f.read_bytes())
    for i, f in enumerate(runtime.inputs()):
        h.add_file(f"input{i}:{f.name}", f)
    h.add_file("busybox", find_busybox())
    return h.hexdigest()


def ensure(cache_dir=None, *, busybox: bool = True) -> Path:
    """Path of the cached overlay for the current agent sources and host Python (see build)."""
    key = cache_key(busybox)
    prefix = "agent-overlay-" if busybox else "agent-overlay-nobb-"
    path = cache.image_dir(cache_dir) / f"{prefix}{key[:16]}.cpio"
    if path.exists():
        return cache.use(path)
    cache.atomic_write(path, build(busybox))
    cache.prune(path.parent, prefix, keep=path)
    return path

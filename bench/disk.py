"""Sequential guest disk throughput: provium's NBD path (a mediated disk) vs a plain raw file.

One VM (q35, TCG) with two 64 MiB disks: `nbd` is mediated (QEMU's NBD client over a
unix socket to provium's asyncio server, write-back overlay, faults checked on every
request) and `raw` is the image file attached directly to virtio-blk.  In the guest,
`dd` with O_DIRECT (no guest page cache) writes then reads the whole disk in 1 MiB
blocks; each write run ends with a flush (`conv=fsync`), so the NBD path commits its
overlay inside the timed run.  Ratio = NBD throughput / raw throughput, same run.

    .venv/bin/python bench/disk.py [--runs N] [--mib N] [--write-readme]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provium import vmm as vmm_mod  # noqa: E402
from provium.config import load  # noqa: E402
from provium.host import VM, Session  # noqa: E402

from readme import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)



def _dev(vm: VM, disk_id: str) -> str:
    r = vm.run("for d in /sys/block/vd*; do echo $(basename $d) $(cat $d/serial); done")
    for line in r.stdout.decode().splitlines():
        name, _, serial = line.partition(" ")
        if serial == disk_id:
            return f"/dev/{name}"
    raise SystemExit(f"disk {disk_id} not found in the guest: {r.stdout!r}")


def _dd(vm: VM, cmd: str, mib: int) -> float:
    """MiB/s, timed inside the guest (busybox dd prints no rate)."""
    # /proc/uptime has 10 ms resolution: runs last a second or more
    r = vm.run(f"read s _ < /proc/uptime; {cmd} 2>/tmp/dd.err || {{ cat /tmp/dd.err; exit 1; }}; "
               "read e _ < /proc/uptime; echo $s $e")
    try:
        start, end = (float(x) for x in r.stdout.split())
    except ValueError:
        raise SystemExit(f"`{cmd}` failed: {r.stdout!r} {r.stderr!r}") from None
    return mib / max(end - start, 0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--write-readme", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="provium-bench-disk-"))
    raw = tmp / "raw.img"
    with open(raw, "wb") as f:
        f.truncate(a.mib << 20)
    results: dict[str, dict[str, list[float]]] = {"nbd": {"write": [], "read": []}, "raw": {"write": [], "read": []}}
    with Session(vmm_mod.create("qemu"), load(None)) as s:
        vm = VM(s, "bench-disk", "linux")
        vm.boot({"disks": [{"id": "nbd", "scratch": f"{a.mib}M", "mediated": True},
                           {"id": "raw", "path": str(raw)}]})
        devs = {k: _dev(vm, k) for k in results}
        for _ in range(a.runs):
            for k, dev in devs.items():  # interleaved, so load changes hit both paths alike
                results[k]["write"].append(_dd(vm, f"dd if=/dev/zero of={dev} bs=1M count={a.mib} "
                                                   "oflag=direct conv=fsync", a.mib))
                results[k]["read"].append(_dd(vm, f"dd if={dev} of=/dev/null bs=1M count={a.mib} iflag=direct", a.mib))
        vm.shutdown()
    os.unlink(raw)
    os.rmdir(tmp)
    med = {k: {op: statistics.median(v) for op, v in ops.items()} for k, ops in results.items()}
    ratio = {op: med["nbd"][op] / med["raw"][op] for op in ("write", "read")}
    for op in ("write", "read"):
        print(f"{op}: nbd {med['nbd'][op]:.1f} MiB/s, raw {med['raw'][op]:.1f} MiB/s, ratio {ratio[op]:.2f}")
    if a.write_readme:
        load1 = os.getloadavg()[0]
        rows = "\n".join(f"| {op} | {med['raw'][op]:.1f} | {med['nbd'][op]:.1f} | {ratio[op]:.2f} |"
                         for op in ("write", "read"))
        write_section("Disks: NBD path vs raw virtio-blk", f"""## Disks: NBD path vs raw virtio-blk

Sequential throughput inside one TCG guest (q35, busybox `dd`, O_DIRECT, 1 MiB blocks,
{a.mib} MiB per run, writes end with a flush), median of {a.runs} interleaved runs: a
mediated disk served by provium's NBD server vs a raw image attached directly.
Target: NBD >= 50 % of raw.  Reproduce: `.venv/bin/python bench/disk.py --write-readme`.

| op | raw virtio-blk (MiB/s) | provium NBD (MiB/s) | NBD / raw |
|---|---|---|---|
{rows}

Machine: {os.cpu_count()} cores, shared with other engineers' runs (loaded: load average
{load1:.1f} at the end); {datetime.date.today().isoformat()}.
""")


if __name__ == "__main__":
    main()

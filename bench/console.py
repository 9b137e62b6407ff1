"""The serial console on a real guest: round trip through the serial shell, and expect.

    .venv/bin/python bench/console.py [--rounds N] [--write-readme]

On one booted `linux` guest (QEMU; TCG where KVM is unusable), one caller at a time:

* baseline: `vm.run("echo x")`, a command through the agent (virtio-serial);
* console round trip: `console.write("echo x\\n")` to the shell the initramfs keeps
  on ttyS0, then `stream.read_until(x)` on an open console stream (the hub's
  shared connection, the emulated UART both ways);
* console expect hit: `console.expect(text)` for text already in the log (one
  read of the log file);
* console expect wait: `vm.run("echo x > /dev/console")` then `console.expect(x)`,
  minus the same run alone: what expect adds once the guest has printed (the
  write to the UART finishes before the command exits, so the text is normally
  in the log at expect's first look; later text is found by a 50 ms poll).

Prints a table; with --write-readme also rewrites the "console" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from provium import vmm
from provium.config import load
from provium.host import VM, Session


def timed(fn, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} ms (p90 {sorted(xs)[int(len(xs) * 0.9) - 1] * 1000:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--write-readme", action="store_true")
    a = ap.parse_args()
    n = a.rounds
    with Session(vmm.create("qemu"), load(None)) as s:
        vm = VM(s, "bench-console", "linux").boot()
        con = vm.console()
        stream = con.read()
        run = timed(lambda i: vm.run(f"echo r{i}"), n)

        def rt(i: int) -> None:
            con.write(f"echo rt-{i}-$((1+1))\n".encode())
            stream.read_until(f"rt-{i}-2".encode(), 20)

        rt(-1)  # the shell's first prompt
        round_trip = timed(rt, n)
        stream.close()
        hit = timed(lambda i: con.expect("BusyBox"), n)
        both = timed(lambda i: (vm.run(f"echo ex-{i}-z > /dev/console"), con.expect(f"ex-{i}-z", 20)), n)
        only = timed(lambda i: vm.run(f"echo ey-{i}-z > /dev/console"), n)
        log_bytes = len(con.read_log())
        vm.shutdown()
    wait = [max(0.0, b - statistics.median(only)) for b in both]
    base = statistics.median(run)
    rows = [
        ("baseline: vm.run(\"echo x\") (agent, virtio-serial)", ms(run), "1.00x"),
        ("console round trip: write + read_until on the serial shell", ms(round_trip),
         f"{statistics.median(round_trip) / base:.2f}x"),
        (f"console.expect, text already in the log ({log_bytes} B log)", ms(hit),
         f"{statistics.median(hit) / base:.2f}x"),
        ("console.expect after the guest printed (beyond the run)", ms(wait),
         f"{statistics.median(wait) / base:.2f}x"),
    ]
    table = "| what | median (p90) | vs baseline |\n|---|---|---|\n" + "\n".join(
        f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows)
    print(table)
    if a.write_readme:
        from readme import write_section

        load_note = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        section = (f"## console\n\n`bench/console.py --rounds {n}` on {platform.node()}, "
                   f"{datetime.date.today().isoformat()}, {load_note} (a shared, loaded machine: "
                   "the ratios within this run are what count). One TCG guest, one caller.\n\n"
                   f"{table}\n")
        write_section("console", section)


if __name__ == "__main__":
    main()

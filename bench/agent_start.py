"""Instructions the agent's start costs, counted by valgrind on the host.

    .venv/bin/python bench/agent_start.py [--src DIR ...] [--runs N]

Builds the agent overlay from each `--src` tree (default: this checkout's `src`),
unpacks it, and runs its packed interpreter (the one the guest runs, through its own
loader) under `valgrind --tool=cachegrind --cache-sim=no`, serving a socket from the
host.  Scenarios, each a fresh agent process counted whole (start, ops, exit):

- `pass`: the same interpreter running `-c pass` (the floor: the interpreter's own start);
- `start-up imports`: the guest's own entry (`run.pyc provium.agent.guest:...`, as
  bench/boot.py's in-guest step runs it): everything the agent imports before it serves;
- `hello`: the agent's start-up imports and the handshake, then the end of its stream;
- `hello + exec true`, `hello + write_file`, `hello + stat + read_file`: the same with
  first ops, so what a lazily loaded op family costs on first use is counted too.

Instruction counts do not depend on the host's load; they stand for emulated CPU in a
TCG guest only roughly (TCG also pays the translation of code run for the first time).
The guest's entry (`provium.agent.guest`) waits for its virtio port, so the agent is
entered through `provium.agent.__main__` with `--fd` here: the same imports plus
`socket`, and the `-c` text compiled, the same in every tree compared.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the tree being measured: build its overlay, unpack it, print the root.
_BUILD = r"""
import stat, sys
from pathlib import Path
from provium.image import overlay
from provium.image.cpio import read_initrd
root = Path(sys.argv[1])
path = overlay.ensure(Path(sys.argv[2]))
for name, mode, data in read_initrd(path.read_bytes()):
    dest = root / name
    if stat.S_ISDIR(mode):
        dest.mkdir(exist_ok=True, parents=True)
    elif stat.S_ISLNK(mode):
        dest.symlink_to(data.decode())
    elif stat.S_ISREG(mode):
        dest.parent.mkdir(exist_ok=True, parents=True)
        dest.write_bytes(data)
        dest.chmod(stat.S_IMODE(mode))
"""

SCENARIOS = {
    "hello (through provium.agent.__main__ --fd)": [],
    "... + exec true": [("exec", {"cmd": "/bin/true"})],
    "... + write_file 4 KiB": [("write_file", {"path": "WRITE_PATH", "data": b"x" * 4096})],
    "... + stat + read_file": [("stat", {"path": "/"}), ("read_file", {"path": "/proc/self/stat"})],
}


def unpack(src: Path, dest: Path, cache: Path) -> Path:
    env = dict(os.environ, PYTHONPATH=str(src))
    dest.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", _BUILD, str(dest), str(cache)], check=True, env=env, cwd=dest)
    return dest


def _interp(root: Path) -> list[str]:
    lib = root / "provium" / "lib"
    loader = next(lib.glob("ld-linux*"))
    return [str(loader), "--library-path", str(lib), str(root / "provium/bin/python3"), "-X", "utf8"]


def _count(stderr: str) -> int:
    m = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def count_pass(root: Path) -> int:
    r = subprocess.run(VALGRIND + _interp(root) + ["-c", "pass"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    return _count(r.stderr)


def count_imports(root: Path) -> int:
    lib = root / "provium" / "lib"
    r = subprocess.run(VALGRIND + _interp(root) + [str(lib / "python3" / "run.pyc"), "provium.agent.guest:_mix_rng_seed"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    return _count(r.stderr)


def count_agent(root: Path, ops: list, tmp: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from provium.protocol.framing import encode_frame, read_frame

    host, agent = socket.socketpair()
    code = "import provium_boot; provium_boot.run('provium.agent.__main__:main')"
    proc = subprocess.Popen(VALGRIND + _interp(root) + ["-c", code, "--fd", str(agent.fileno())],
                            pass_fds=[agent.fileno()], env={"PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True)
    agent.close()
    rf = host.makefile("rb")
    frames = [("hello", {"protocol_version": 1})]
    for kind, data in ops:
        if kind == "write_file":
            data = dict(data, path=str(tmp / "written"))
        frames.append((kind, data))
    for ch, (kind, data) in enumerate(frames):
        host.sendall(encode_frame({"ch": ch, "kind": kind, "data": data}))
        reply = read_frame(rf)
        if reply["kind"] == "agent_error":
            raise RuntimeError(f"{kind}: {reply}")
    host.shutdown(socket.SHUT_WR)
    _, err = proc.communicate(timeout=300)
    host.close()
    return _count(err)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", type=Path, help="a tree's src directory (repeatable)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each scenario (the minimum is shown)")
    args = ap.parse_args()
    srcs = args.src or [ROOT / "src"]
    with tempfile.TemporaryDirectory(prefix="provium-agent-start-") as d:
        rows: dict[str, list[int]] = {}
        for i, src in enumerate(srcs):
            root = unpack(src.resolve(), Path(d) / f"root{i}", Path(d) / f"cache{i}")
            rows.setdefault("python -c pass", []).append(min(count_pass(root) for _ in range(args.runs)))
            rows.setdefault("start-up imports (the guest's entry, until it would serve)", []).append(
                min(count_imports(root) for _ in range(args.runs)))
            for name, ops in SCENARIOS.items():
                n = min(count_agent(root, ops, Path(d)) for _ in range(args.runs))
                rows.setdefault(name, []).append(n)
        head = "| scenario | " + " | ".join(str(s) for s in srcs) + " |"
        print(head)
        print("|---" * (len(srcs) + 1) + "|")
        for name, counts in rows.items():
            print(f"| {name} | " + " | ".join(f"{c / 1e6:.1f} M" for c in counts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

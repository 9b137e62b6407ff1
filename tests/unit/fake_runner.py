"""A stand-in runner for scheduler tests: speaks the runner's command-line contract.

The "test file" is JSON describing what to do: tests to report, a sleep, a
crash.  This lets the scheduler's process handling (parallelism, timeouts,
crashes, event forwarding) be tested without Lua or VMs.
"""

import argparse
import json
import os
import sys
import time

from provium.events import types as ev
from provium.events.sinks import FdSink

ap = argparse.ArgumentParser()
ap.add_argument("--settings", required=True)
ap.add_argument("--result", required=True)
ap.add_argument("--events-fd", type=int, required=True)
ap.add_argument("--owner", type=int)
ap.add_argument("file")
a = ap.parse_args()

spec = json.loads(open(a.file).read() or "{}")
if spec.get("report"):
    # what the runner inherited: its threads (as the kernel counts them), descriptors, group
    info = {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "threads": len(os.listdir("/proc/self/task")), "fds": sorted(int(x) for x in os.listdir("/proc/self/fd")),
            "modules": len(sys.modules)}
    with open(spec["report"], "w") as f:
        json.dump(info, f)
settings = json.loads(open(a.settings).read())
sink = FdSink(a.events_fd)
tests = []
start = time.monotonic()
if spec.get("record"):
    with open(spec["record"], "a") as f:
        f.write(f"{a.file} start {time.monotonic()}\n")
for t in spec.get("tests", []):
    meta = t.get("meta", {})
    meta.update({k: bytes.fromhex(v) for k, v in t.get("bytes_meta", {}).items()})
    sink.emit(ev.TestStarted(path=a.file, name=t["name"], meta=meta))
    if t.get("sleep"):
        time.sleep(t["sleep"])
    status = t.get("status", "passed")
    if status == "passed":
        sink.emit(ev.TestPassed(path=a.file, name=t["name"], duration_ns=1, meta=meta))
    elif status == "failed":
        sink.emit(ev.TestFailed(path=a.file, name=t["name"], duration_ns=1, reason=t.get("message", ""), meta=meta))
    else:
        sink.emit(ev.TestSkipped(path=a.file, name=t["name"], reason=t.get("message", ""), meta=meta))
    tests.append({"name": t["name"], "status": status, "message": t.get("message"), "log": t.get("log", []),
                  "duration_ns": 1, "meta": t.get("meta", {})})
if spec.get("print"):
    print(spec["print"], flush=True)
if spec.get("record"):
    with open(spec["record"], "a") as f:
        f.write(f"{a.file} end {time.monotonic()}\n")
if spec.get("spawn_child"):
    # a grandchild in the runner's process group that would outlive it without the group kill
    import subprocess
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(spec["spawn_child"], "w").write(str(p.pid))
if spec.get("hang"):
    time.sleep(spec["hang"])
if spec.get("crash") == "signal":
    os.kill(os.getpid(), 9)
if spec.get("crash") == "segfault":
    import ctypes
    ctypes.string_at(0)
if spec.get("crash") == "os_exit":
    print("runner: leaving at once", file=sys.stderr, flush=True)
    os._exit(5)
if spec.get("crash") == "exit":
    print("runner: something broke", file=sys.stderr)
    sys.exit(3)
if spec.get("crash") == "no_result":
    sys.exit(0)
if spec.get("crash") == "bad_result":
    open(a.result, "w").write("{not json")
    sys.exit(0)
json.dump({"path": a.file, "chunk_error": spec.get("chunk_error"), "tests": tests,
           "duration_ns": int((time.monotonic() - start) * 1e9), "settings_vmm": settings.get("vmm")},
          open(a.result, "w"))

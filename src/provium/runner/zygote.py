"""The runner zygote: heavy imports done once, then one forked runner per test file.

`python -m provium.runner.zygote --control-fd N` imports what a runner needs
(lupa, the host model, the backends, the event types: about a quarter of a
second of CPU that a spawned runner pays again for every file), then forks a
runner for each request that arrives on the control socket.  The child behaves
exactly like `python -m provium.runner ARGS` started by the dispatcher:

* its own session and process group (the dispatcher's watchdog kills the group);
* stdin from /dev/null, stdout and stderr to the file's log, the event pipe on
  fd 3, and no other descriptor of the zygote;
* PR_SET_PDEATHSIG: it dies with the zygote, which dies with the dispatcher's
  thread, so a killed `provium` still takes every runner and QEMU along;
* a fresh Lua state and fresh host objects (the zygote only imported modules,
  it never ran a file), and no thread or event loop: the zygote checks that it
  has exactly one thread (`/proc/self/task`) before every fork and that no
  asyncio loop exists after its imports.  When either check fails it refuses,
  and the dispatcher starts runners the old way;
* its exit status is reported by the zygote, its parent, which reaps it.

Why a separate process instead of forking runners from the `provium` process
itself: the CLI has a console, a progress bar thread, the coordinator's sockets
and the event sinks; a fork would copy all of them into every runner.  The
zygote has nothing but the control socket.  It is either spawned (`main`) or
forked from the `provium` command at its very start, before the CLI has made
any of those (scheduler/zygote_fork.py; `run`).

Wire format (a SOCK_SEQPACKET socketpair, so each message is one JSON object
and descriptors travel with SCM_RIGHTS):

  zygote -> dispatcher  {"ready": PID}  or  {"error": TEXT} (then it exits)
  dispatcher -> zygote  {"run": [ARG, ...], "env": {...}, "cwd": DIR} + fds [events, log]
  zygote -> dispatcher  {"started": PID}  or  {"refused": TEXT}
  zygote -> dispatcher  {"exited": PID, "code": N}   (N < 0: killed by signal -N)

The zygote exits when the dispatcher closes its end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

CONTROL_FD_ARG = "--control-fd"
EVENTS_FD = 3  # where the forked runner finds its event pipe
MAX_MSG = 1 << 20
# Imported before the zygote says it is ready: everything a runner imports for a
# file on the local backend, with the modules loaded lazily on the way.
PRELOAD = (
    "provium.runner.__main__",
    "provium.runner.file_runner",
    "provium.vmm.local.backend",
    "provium.events.sinks",
    "provium.artifacts",
    "provium.scheduler.coordinator",  # the runner's client of the dispatcher
)
# Imported when the zygote is idle after that: the first file need not wait for
# them (a one-file run is on the critical path), later ones get them for free.
PRELOAD_IDLE = (
    # The host model and the Lua bindings load lazily (a file that makes no VM
    # never needs them), so the first runner does not wait for them either.
    "provium.host.vm",
    "provium.lua.net",
    "provium.lua.objects",
    "provium.host.console",
    "provium.protocol.mux",
    "provium.vmm.qemu.backend",
    "psutil",  # file_runner.kill_children, on a timeout
)
ENTRY = "provium.runner.__main__:main"
ZYGOTE_NAME = b"provium-zygote"  # process names (comm), as `ps` shows them
RUNNER_NAME = b"provium-runner"
PR_SET_PDEATHSIG = 1


def encode(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def thread_count() -> int:
    """Threads of this process as the kernel sees them (C-level threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def fork_hazard(full: bool = True) -> str | None:
    """Why forking now would hand a runner inherited state, or None when it is safe.
    `full` also looks through every object for an event loop (milliseconds: done after
    imports, not before each fork)."""
    n = thread_count()
    if n != 1:
        import threading

        names = ", ".join(t.name for t in threading.enumerate())
        return f"the zygote has {n} threads (Python threads: {names}); a forked runner would inherit a broken copy"
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        if asyncio.events._get_running_loop() is not None:
            return "an asyncio loop runs in the zygote"
        if not full:
            return None
        import gc

        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
        if loops:
            return f"the zygote holds {len(loops)} asyncio event loop(s); a forked runner would inherit them"
    return None


PR_SET_NAME = 15


def set_name(name: bytes) -> None:
    """The name `ps -o comm`, `top` and psutil show: a forked runner's command line is
    the zygote's, so the name tells the two apart."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_with(parent: int) -> None:
    """SIGKILL when `parent` goes; exit now if it is already gone."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(2)


def _load_entry(spec: str):
    from importlib import import_module

    mod, _, fn = spec.partition(":")
    return getattr(import_module(mod), fn)


def _child(zygote: int, args: list[str], env: dict[str, str] | None, cwd: str | None, events_fd: int,
           log_fd: int, entry) -> None:
    """In the forked runner: become a runner process, run the file, exit.  Never returns."""
    code = 2
    try:
        os.setsid()  # like start_new_session=True: its own group, for the watchdog's killpg
        _die_with(zygote)
        set_name(RUNNER_NAME)
        # Order matters: the received descriptors may sit on any number from 3 up.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(null, 0)
        if events_fd != EVENTS_FD:
            os.dup2(events_fd, EVENTS_FD, inheritable=False)
        # Nothing of the zygote's stays open (its control socket, the pidfds of the
        # other runners): a spawned runner gets only 0-2 and the event pipe.
        os.closerange(EVENTS_FD + 1, 1 << 20)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The runner's environment and directory are the dispatcher's of this run, which
        # may differ from the zygote's (it can be started before the run's are known).
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = ["provium.runner", *args]
        try:
            rv = entry(args)
            code = rv if isinstance(rv, int) else 0
        except SystemExit as exc:  # as the interpreter treats it: None is 0, a text is printed and 1
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what the interpreter would do: traceback, status 1
            import traceback

            traceback.print_exc()
            code = 1
        _shutdown()
    except BaseException:  # noqa: BLE001 - the child must never return into the zygote's loop
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def _shutdown() -> None:
    """What the interpreter does at exit, which os._exit skips: wait for the
    non-daemon threads, then run the atexit handlers."""
    import atexit
    import threading

    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon:
            t.join()
    atexit._run_exitfuncs()


def _settle_imports() -> str | None:
    """After imports: anything that makes forking unsafe; else freeze what was imported.
    Frozen objects are never collected in the runners, so their GC passes do not write
    to (and so copy) the pages the zygote shares with them."""
    import gc

    hazard = fork_hazard(full=True)
    if hazard is None:
        gc.freeze()
    return hazard


def serve(ctl: socket.socket, entry, idle: list[str] | None = None) -> int:
    import selectors
    from importlib import import_module

    me = os.getpid()
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, None)
    children: dict[int, int] = {}  # pidfd -> pid
    refused: str | None = None
    idle = list(idle or ())
    reaped = False
    while True:
        # The idle imports wait until a first runner has ended: a request (or an exit
        # to report) that came during an import would wait for it, and a one-file
        # run's only file is its critical path.
        ready = sel.select(0 if idle and reaped else None)
        if not ready and idle:
            try:
                import_module(idle.pop(0))
            except Exception:  # noqa: BLE001 - a runner that needs it imports it, and reports the error
                pass
            refused = refused or _settle_imports()
            continue
        for key, _ in ready:
            if key.data is not None:  # a runner exited
                pidfd, pid = key.fd, key.data
                sel.unregister(pidfd)
                os.close(pidfd)
                children.pop(pidfd, None)
                _, status = os.waitpid(pid, 0)
                ctl.send(encode({"exited": pid, "code": os.waitstatus_to_exitcode(status)}))
                reaped = True
                continue
            try:
                data, fds, _, _ = socket.recv_fds(ctl, MAX_MSG, 2)
            except ConnectionResetError:
                data, fds = b"", []
            if not data:  # the dispatcher is done; its runners were killed or have ended
                return 0
            try:
                msg = json.loads(data)
                args = [str(a) for a in msg["run"]]
                env = msg.get("env")
                env = None if env is None else {str(k): str(v) for k, v in env.items()}
                cwd = msg.get("cwd")
                events_fd, log_fd = fds
            except (ValueError, KeyError, TypeError):
                for fd in fds:
                    os.close(fd)
                ctl.send(encode({"refused": f"bad request: {data[:200]!r}"}))
                continue
            refused = refused or fork_hazard(full=False)
            if refused is not None:
                os.close(events_fd)
                os.close(log_fd)
                ctl.send(encode({"refused": refused}))
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                ctl.close()
                _child(me, args, env, cwd, events_fd, log_fd, entry)
            os.close(events_fd)
            os.close(log_fd)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            sel.register(pidfd, selectors.EVENT_READ, pid)
            ctl.send(encode({"started": pid}))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m provium.runner.zygote",
                                 description="Fork provium runners from one pre-imported process (used by the dispatcher).")
    ap.add_argument(CONTROL_FD_ARG, type=int, required=True, help="the dispatcher's SOCK_SEQPACKET socket")
    ap.add_argument("--entry", default=ENTRY, help="module:function run in each child with the runner's arguments")
    ap.add_argument("--preload", action="append", default=None,
                    help="a module to import before forking (repeat; replaces the default lists)")
    a = ap.parse_args(argv)
    return run(a.control_fd, preload=a.preload, entry=a.entry)


def run(control_fd: int, *, parent: int | None = None, preload: list[str] | None = None, entry: str = ENTRY) -> int:
    """Be the zygote on `control_fd` until the dispatcher closes it: in a spawned
    zygote (`main`) or in one forked from the `provium` process (zygote_fork.py),
    whose `parent` is the pid it was forked from."""
    _die_with(os.getppid() if parent is None else parent)  # the dispatcher's thread that started us
    set_name(ZYGOTE_NAME)
    ctl = socket.socket(fileno=control_fd)
    try:
        from importlib import import_module

        for name in (PRELOAD if preload is None else preload):
            import_module(name)
        entry_fn = _load_entry(entry)
    except BaseException as exc:  # noqa: BLE001 - reported; the dispatcher spawns runners instead
        ctl.send(encode({"error": f"preloading failed: {type(exc).__name__}: {exc}"}))
        return 2
    hazard = _settle_imports()
    if hazard is not None:
        ctl.send(encode({"error": hazard}))
        return 2
    ctl.send(encode({"ready": os.getpid()}))
    return serve(ctl, entry_fn, list(PRELOAD_IDLE) if preload is None else [])


if __name__ == "__main__":
    sys.exit(main())

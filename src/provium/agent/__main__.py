"""`python -m provium.agent`: serve on an inherited descriptor.

    --fd N          serve the host protocol (with handshake) on connected fd N
                    until it ends, then exit 0.  This is what the local backend
                    runs; it implies --local unless PROVIUM_AGENT_LOCAL=0.
    --worker-fd N   worker mode: serve a parent agent on fd N, no handshake;
                    --uid/--gid/--groups are taken (groups, then gid, then uid)
                    before serving.
    --local         the agent runs on the host: never change the host clock.
                    (Also set by PROVIUM_AGENT_LOCAL=1.)
    --keeper        (with --fd) fork a keeper that outlives the agent just long
                    enough to kill everything it started, even after a SIGKILL
                    (see keeper.py); the local backend uses it.

When the served stream ends, or on SIGTERM, everything the agent started
(processes, workers) is killed first, so nothing outlives it.
"""

from __future__ import annotations

import os
import sys

from provium.errors import ArgumentError

from .startup import defer_inspect

defer_inspect()  # before anything imports dataclasses (see startup.py)

USAGE = (
    "usage: python -m provium.agent --fd N [--local] [--keeper]\n"
    "       python -m provium.agent --worker-fd N [--uid UID] [--gid GID] [--groups G1,G2,...] [--local]\n"
    "       python -m provium.agent --help\n"
)


class UsageError(ArgumentError):
    """Bad command-line arguments to the agent."""


def parse(argv: list[str]) -> dict:
    opts: dict = {"local": False}
    ints = {"--fd": "fd", "--worker-fd": "worker_fd", "--uid": "uid", "--gid": "gid"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            opts["help"] = True
            i += 1
            continue
        if arg in ("--local", "--keeper"):
            opts[arg[2:]] = True
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name not in ints and name != "--groups":
            raise UsageError(f"unknown argument `{arg}`")
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"`{name}` needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "--groups":
            try:
                opts["groups"] = [int(g) for g in value.split(",") if g != ""]
            except ValueError:
                raise UsageError(f"--groups must be comma-separated numbers, got `{value}`") from None
            continue
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"`{name}` must be a number, got `{value}`") from None
        if n < 0:
            raise UsageError(f"`{name}` must not be negative, got {n}")
        opts[ints[name]] = n
    if opts.get("help"):
        return opts
    if ("fd" in opts) == ("worker_fd" in opts):
        raise UsageError("give exactly one of --fd or --worker-fd")
    if "fd" in opts and any(k in opts for k in ("uid", "gid", "groups")):
        raise UsageError("--uid/--gid/--groups only apply with --worker-fd")
    if opts.get("keeper") and "fd" not in opts:
        raise UsageError("--keeper only applies with --fd")
    return opts


def _open(fd: int):
    """(rfile, wfile) for fd: a socket if it is one, else plain file objects."""
    import socket

    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        rfile = open(fd, "rb", buffering=1 << 16, closefd=False)
        wfile = open(fd, "wb", buffering=0, closefd=False)
        return rfile, wfile, None
    return sock, sock, sock


def _no_inherit_fds() -> None:
    """Make every inherited descriptor above stderr close-on-exec.

    Children are started without closing descriptors (see children.spawn), so
    what our parent passed us (above all the served socket) must not reach
    them: a daemon holding the host's socket would keep the host from ever
    seeing this agent end.
    """
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, already closed


def _serve_until_sigterm(run) -> bool:
    """Run `run()` on a thread until it returns (False) or SIGTERM arrives (True).

    The signal handler does nothing but let the C-level handler write the
    signal number to a wake-up pipe; the main thread only reads that pipe.  No
    exception is ever raised into running code (which could land inside a lock
    operation of a thread being started), and the cleanup runs on the main
    thread in plain sequence.
    """
    import signal
    import threading

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    failure: list[BaseException] = []

    def session() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised on the main thread
            failure.append(exc)
        finally:
            os.write(wake_w, b"\0")  # signal numbers are never 0

    threading.Thread(target=session, daemon=True, name="session").start()
    while True:
        data = os.read(wake_r, 64)
        if bytes([signal.SIGTERM]) in data:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up first
            return True
        if b"\0" in data:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if failure:
                raise failure[0]
            return False


def _die_by_sigterm() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)


def _drop_credentials(opts: dict) -> None:
    uid, gid, groups = opts.get("uid"), opts.get("gid"), opts.get("groups")
    if groups is not None:
        os.setgroups(groups)
    elif (uid is not None or gid is not None) and os.geteuid() == 0:
        os.setgroups([])  # do not carry root's supplementary groups into a lesser identity
    if gid is not None:
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def _worker_startup_failed(sock, message: str) -> None:
    from provium.protocol.envelope import Envelope
    from provium.protocol.framing import encode_frame
    from provium.protocol.core import AgentError, AgentErrorKind

    try:
        sock.sendall(encode_frame(Envelope(0, "agent_error", AgentError(AgentErrorKind.INTERNAL, message)).to_wire()))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"provium-agent: {exc}\n{USAGE}")
        return 2
    if opts.get("help"):
        sys.stdout.write(USAGE + (__doc__ or ""))
        return 0

    if opts.get("keeper"):
        from . import keeper

        keeper.split([opts["fd"]])  # returns only in the child, which serves

    _no_inherit_fds()

    from .base import log
    from .server import serve
    from .state import AgentState

    env_local = os.environ.get("PROVIUM_AGENT_LOCAL")
    local = opts["local"] or env_local == "1" or ("fd" in opts and env_local != "0")
    worker = "worker_fd" in opts
    fd = opts["worker_fd"] if worker else opts["fd"]
    try:
        rfile, wfile, sock = _open(fd)
    except OSError as exc:
        sys.stderr.write(f"provium-agent: cannot use fd {fd}: {exc}\n")
        return 1
    state = AgentState(local=local, worker=worker)

    if worker:
        # Everything a worker may import later is loaded while it still can read
        # the interpreter's files; a lesser uid may not be able to.
        import select  # noqa: F401
        import subprocess  # noqa: F401

        from provium.protocol import kinds

        from . import ops, syscalls

        for family in ops.FAMILIES:  # each op family, loaded on its first op elsewhere
            ops.load(family)
            kinds.family(family)
        syscalls.preload()
        try:
            _drop_credentials(opts)
        except OSError as exc:
            what = {k: opts[k] for k in ("uid", "gid", "groups") if k in opts}
            msg = f"worker could not take credentials {what}: {exc.strerror or exc} (errno {exc.errno})"
            log(msg)
            if sock is not None:
                _worker_startup_failed(sock, msg)
            return exc.errno if isinstance(exc.errno, int) and 0 < exc.errno < 128 else 1

    try:
        terminated = _serve_until_sigterm(lambda: serve(rfile, wfile, state, handshake=not worker))
    finally:
        state.shutdown()
    if terminated:
        _die_by_sigterm()
    if worker:
        # Leave without interpreter finalization: a pool thread still finishing
        # would be ended with pthread_exit, which needs libgcc_s.so.1 -- absent
        # from the guest's minimal runtime, so glibc aborts (exit status 134).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

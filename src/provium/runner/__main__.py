"""`python -m provium.runner --settings S.json --result R.json --events-fd N FILE`

Runs one test file in this process and writes its FileOutcome as JSON to
R.json (atomically) and event frames to fd N.  Exit status 0 whenever a
result was written, failed tests included; 2 when the runner itself could not
do its job (bad arguments, unreadable settings, an internal crash).

The process makes itself a process-group leader and asks the kernel to kill it
when its parent (the dispatcher) dies, so a dead dispatcher never leaves a
runner, and through it a QEMU, behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading

from ..fsutil import atomic_write

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # already a group/session leader (started with start_new_session)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(2)
    except OSError:
        pass


def _reader_gone(fd: int) -> bool:
    """Whether nobody reads our events pipe any more: the dispatcher holds the read
    end while we run, so a dispatcher killed before `_die_with_parent` armed the
    death signal (a slow start on a loaded host) shows here as POLLERR."""
    import select

    try:
        p = select.poll()
        p.register(fd, 0)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (OSError, ValueError):
        return False


def _watch_sigterm() -> None:
    """SIGTERM stops the file politely: the running test fails with "runner
    terminated (SIGTERM)", later tests are listed as not run, VMs shut down.

    Python runs a signal handler only between bytecodes, never while Lua code or
    a C call holds the main thread; the wakeup fd is written by the C-level
    handler at once, so a thread reading it can act on time."""
    from .file_runner import terminate

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the watcher does the work
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        import select

        while True:
            select.select([r], [], [])
            try:
                data = os.read(r, 64)
            except BlockingIOError:
                continue
            if signal.SIGTERM in data:
                terminate("runner terminated (SIGTERM)")
                return

    threading.Thread(target=watch, name="provium-sigterm", daemon=True).start()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m provium.runner",
                                 description="Run one provium test file (used by the dispatcher).")
    ap.add_argument("--settings", required=True, help="RunSettings JSON file")
    ap.add_argument("--result", required=True, help="where to write the FileOutcome JSON")
    ap.add_argument("--events-fd", type=int, default=None, help="file descriptor for event frames")
    ap.add_argument("--owner", type=int, default=None, help="this file's id with the dispatcher's coordinator")
    ap.add_argument("file", help="the *.test.lua file")
    return ap


# Built at import: a runner forked from the zygote (zygote.py) then does not build it again.
PARSER = _parser()


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()  # first: no window in which a dead dispatcher leaves us running
    args = PARSER.parse_args(argv)
    if args.events_fd is not None and _reader_gone(args.events_fd):
        return 2  # the dispatcher died before our death signal was armed: nobody wants this file run

    from .. import artifacts, log
    from ..events.sinks import FdSink, NullSink
    from .file_runner import run_file
    from .settings import RunSettings, SettingsError

    try:
        with open(args.settings, encoding="utf-8") as f:
            settings = RunSettings.from_json(f.read())
    except (OSError, SettingsError) as exc:
        print(f"provium runner: cannot read settings `{args.settings}`: {exc}", file=sys.stderr)
        return 2

    artifacts.enter_file(args.file)  # where this file's VMs leave their evidence
    try:
        log.configure()  # $PROVIUM_LOG, set by `provium --log-level`
    except Exception as exc:  # noqa: BLE001 - a bad level must not stop the file
        print(f"provium runner: {exc}", file=sys.stderr)
    sink = FdSink(args.events_fd, close_fd=True) if args.events_fd is not None else NullSink()
    written = threading.Lock()
    done = {"flag": False}

    def write_once(outcome) -> None:
        with written:
            if done["flag"]:
                return
            done["flag"] = True
            try:
                # Never create the run's work dir: if it is gone, the dispatcher died and the
                # next run swept it (recreating it would leave it behind for good).
                atomic_write(args.result, outcome.to_json(), make_parents=False)
            except FileNotFoundError:
                pass

    def on_stuck(outcome) -> None:
        # A timed-out test did not unwind: report what we have and leave; the
        # kernel's death signal takes our children with us.
        try:
            write_once(outcome)
        finally:
            sys.stderr.flush()
            os._exit(0)

    _watch_sigterm()
    try:
        outcome = run_file(args.file, settings, sink.emit, on_stuck=on_stuck, owner=args.owner)
        write_once(outcome)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - report any crash in one line
        print(f"provium runner: internal error while running `{args.file}`: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        if os.environ.get("PROVIUM_DEBUG"):
            import traceback

            traceback.print_exc()
        return 2
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

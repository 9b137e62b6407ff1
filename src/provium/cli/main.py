"""The `provium` command.

What the command does (runs, subcommands, exit codes) is described in commands.py.

This module is only the entry point, and imports nothing heavy: when the
arguments look like a run, it starts the runner zygote first (a fork+exec, a
few milliseconds), so the zygote's imports (lupa, the host model) overlap the
CLI's own (click, rich, the scheduler: commands.py, run.py) on a second core.
The flags, once parsed, decide for good (commands.py stops a zygote the run
does not want).  Start-up time: `python -X importtime -m provium.cli.main --help`.
"""

from __future__ import annotations

import sys

# Words that select a subcommand, or end the command before any run: no zygote for
# them.  A unit test checks this against the click group.
NOT_A_RUN = frozenset({"list", "prepare", "fixture", "repl", "console", "lsp-setup", "help",
                       "-h", "--help", "-V", "--version", "--no-zygote"})


def _looks_like_a_run(args: list[str]) -> bool:
    if any(a in NOT_A_RUN for a in args) or "--executor=ray" in args:
        return False
    for i, a in enumerate(args[:-1]):
        if a == "--executor" and args[i + 1] == "ray":
            return False
    return True


def dispatch(args: list[str], *, fork_zygote: bool = False) -> int:
    """Run `provium ARGS`; the exit code.  `fork_zygote`: this process is the bare
    `provium` command (nothing imported yet, one thread), so a run's zygote may be
    forked from it (zygote_fork.py) instead of spawned."""
    if _looks_like_a_run(args) and not _zygote_off():
        forked = None
        if fork_zygote:
            from provium.scheduler import zygote_fork

            forked = zygote_fork.start()
        if forked is None:  # in-process callers, or this process cannot fork: spawn one
            from provium.scheduler import zygote_client

            zygote_client.start_early()
    from . import commands

    try:
        return commands.dispatch(args)
    finally:
        from provium.scheduler import zygote_client

        zygote_client.discard_early()  # not adopted: the run stopped before it dispatched


def _zygote_off() -> bool:
    """PROVIUM_NO_ZYGOTE, read as zygote_client.disabled_by_env does (without importing it)."""
    import os

    return os.environ.get("PROVIUM_NO_ZYGOTE", "").strip().lower() not in ("", "0", "no", "false", "off")


def __getattr__(name: str) -> object:
    """`group`, `run_command`, `SUBCOMMANDS`: the click objects, from commands.py."""
    if name in ("group", "run_command", "SUBCOMMANDS"):
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'provium.cli.main' has no attribute {name!r}")


class _Entry:
    """What `provium` (and click's CliRunner in tests) calls."""

    name = "provium"

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        code = dispatch(list(sys.argv[1:] if args is None else args))
        if standalone_mode:
            sys.exit(code)
        return code


cli = _Entry()


def main() -> None:
    args = sys.argv[1:]
    code = dispatch(args, fork_zygote=True)  # the `provium` command itself: a bare process
    if _looks_like_a_run(args):
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """Exit as the interpreter would, minus its final teardown.

    After a run, the interpreter would free every module and object one by one
    before exiting: tens of milliseconds of a one-file run, for memory the
    kernel frees at once.  What a normal exit does that matters still happens:
    non-daemon threads (if any, the normal exit is taken), the atexit handlers
    (logging's flush, weakref finalizers, temp directories), the flush of
    stdout and stderr.  The run closes its own files (sinks, reports) itself."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the normal exit reports it as it always did
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()

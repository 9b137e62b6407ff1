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


def dispatch(args: list[str]) -> int:
    """Run `provium ARGS`; the exit code."""
    if _looks_like_a_run(args):
        from provium.scheduler import zygote_client

        if not zygote_client.disabled_by_env():
            zygote_client.start_early()
    from . import commands

    try:
        return commands.dispatch(args)
    finally:
        from provium.scheduler import zygote_client

        zygote_client.discard_early()  # not adopted: the run stopped before it dispatched


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
    cli.main()


if __name__ == "__main__":
    main()

"""The `provium` command's click definitions and its dispatch (main.py is the entry).

There is no `run` subcommand: `provium [FLAGS] [PATH]...` runs tests, and the
flags may come before, between or after the paths.  A first positional word
that names a subcommand (`list`, `prepare`, ...) selects that subcommand
instead; the top-level flags then go before it (`provium --config x.toml list`).

Exit codes: 0 everything passed or was skipped, 1 a test/file failed or timed
out, 2 bad usage or an error that stopped the run.  User errors never show a
Python traceback (set PROVIUM_DEBUG=1 to see one for internal errors).
"""

from __future__ import annotations

import os
import sys

import click

from provium.errors import ConfigError

from .options import COMMON_OPTIONS, flags_from, option_takes_value
from . import subcommands

# Start-up time matters (`provium` on one file should cost little more than a bare
# Python start): the run machinery (cli/run.py: rich, the scheduler, the event
# types), the config and importlib.metadata load only when a command needs them.
# `python -X importtime -m provium.cli.main --help` shows what is left.


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("provium")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"provium {_version()}")
        ctx.exit()


def _version_option(cmd: click.Command) -> None:
    """`-V/--version`, with the version looked up only when asked for."""
    cmd.params.append(click.Option(["-V", "--version"], is_flag=True, expose_value=False, is_eager=True,
                                   callback=_print_version, help="Show the version and exit."))


SUBCOMMANDS_HELP = """\b
Subcommands (flags above go before the subcommand):
  list [--fixtures] [PATH]...   list test files and their tests
  prepare [PROFILE]             run profile build commands / build the default guest image
  fixture list|build|rebuild|clean|stale   manage the fixture cache
  repl [PROFILE] [--name NAME] [--fixture NAME]   a Lua prompt with a VM bound as `vm`
  console PROFILE [--print-command] [-- QEMU_ARG...]   the guest's serial console here
  lsp-setup [DIR] [--force]     editor completion: .luarc.json + generated type stubs
\b
Exit codes: 0 all passed or skipped, 1 a failure or timeout, 2 usage or setup error.
"""


def _run_callback(**params):
    flags = flags_from(params)
    from provium.scheduler import zygote_client

    if flags.executor == "local" and not flags.no_zygote and not zygote_client.disabled_by_env():
        # Before the imports below and the config (if main.py has not started it already):
        # the zygote's imports overlap them.
        zygote_client.start_early()
    else:
        zygote_client.discard_early()  # main.py guessed from the raw arguments; the flags say no
    try:
        from .run import run_mode

        return run_mode(flags)
    finally:
        zygote_client.discard_early()  # when the run ended before its dispatcher adopted it


run_command = click.Command(
    "provium",
    params=[*COMMON_OPTIONS, click.Argument(["paths"], nargs=-1, metavar="[PATH]...")],
    callback=_run_callback,
    help="Run the *.test.lua files under PATH (files or directories; default: the config's roots, or .).",
    epilog=SUBCOMMANDS_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
_version_option(run_command)


@click.pass_context
def _group_callback(ctx, **params):
    ctx.obj = flags_from(params)
    ctx.obj.check()


group = click.Group(
    "provium", params=list(COMMON_OPTIONS), callback=_group_callback,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
_version_option(group)
subcommands.register(group, run_command)
SUBCOMMANDS = set(group.commands)


def _first_positional(args: list[str]) -> int | None:
    """Index of the first word that is not an option or an option's value."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return i + 1 if i + 1 < len(args) else None
        if a.startswith("--") and "=" in a:
            i += 1
            continue
        if a.startswith("-") and a != "-":
            if option_takes_value(a):
                i += 2
            else:
                i += 1
            continue
        return i
    return None


def _debug() -> bool:
    return os.environ.get("PROVIUM_DEBUG", "") not in ("", "0")


# Subcommands that take the run's selection flags (`provium list --filter net`):
# users type them after the subcommand too, as with a run.
_TAKES_RUN_FLAGS = {"list"}


def _hoist_run_flags(args: list[str], idx: int) -> list[str]:
    """Move run flags found after the subcommand at `idx` to before it."""
    before, after = args[:idx], []
    rest = args[idx + 1:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            after += rest[i:]
            break
        name = a.split("=", 1)[0]
        takes = option_takes_value(name) if a.startswith("--") or (a.startswith("-") and len(a) == 2) else None
        if takes is None:
            after.append(a)
            i += 1
            continue
        n = 2 if takes and "=" not in a else 1
        before += rest[i:i + n]
        i += n
    return before + [args[idx]] + after


def dispatch(args: list[str]) -> int:
    """Run `provium ARGS`; the exit code."""
    idx = _first_positional(args)
    if idx is not None and args[idx] in _TAKES_RUN_FLAGS:
        args = _hoist_run_flags(args, idx)
        idx = _first_positional(args)
    cmd = group if idx is not None and args[idx] in SUBCOMMANDS else run_command
    try:
        rv = cmd.main(args=args, prog_name="provium", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.UsageError as exc:
        # One line, as documented: what was wrong, and where to look.
        print(f"provium: {' '.join(exc.format_message().split())} (see `provium --help`)", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"provium: {exc.format_message()}", file=sys.stderr)
        return 2
    except (click.Abort, KeyboardInterrupt):
        print("provium: interrupted", file=sys.stderr)
        return 2
    except ConfigError as exc:  # the config's errors and the CLI's UserError
        if _debug():  # the chain of causes behind the one line
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(f"provium: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `provium ... | head`: the reader left; nothing more to say.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 2
    except Exception as exc:
        if _debug():
            import traceback

            traceback.print_exc()
        print(f"provium: internal error: {type(exc).__name__}: {exc}"
              + ("" if _debug() else " (set PROVIUM_DEBUG=1 for a traceback)"), file=sys.stderr)
        return 2

"""Subcommands: `list`, `prepare`, `help` and the interactive tools (`tools.py`).

`fixture` lives in fixture_cmd.py.
"""

from __future__ import annotations

import click

from provium.errors import ProviumError

from .errors import UserError

# cli/run.py, the config and the scheduler are imported inside the commands: `provium
# --help` and every other command's start stay free of them.


def _list_tests():
    """The runner's test lister, if the runner provides one."""
    try:
        from provium.runner.file_runner import list_tests
    except ImportError:
        return None
    return list_tests


def _describe(meta: dict) -> str:
    """`  [smoke, net] slow` — what selection flags will see."""
    bits = []
    tags = meta.get("tags")
    tags = [tags] if isinstance(tags, str) else [x for x in tags if isinstance(x, str)] if isinstance(tags, list) else []
    if tags:
        bits.append("[" + ", ".join(tags) + "]")
    if meta.get("slow") is True or (isinstance(meta.get("slow"), int) and meta.get("slow") not in (0, False)):
        bits.append("slow")
    if meta.get("skip") not in (None, False, 0):
        bits.append("skip")
    if isinstance(meta.get("spec"), str):
        bits.append(f"spec={meta['spec']}")
    return ("  " + " ".join(bits)) if bits else ""


@click.command("list", help="List test files (or fixture files) and the tests in each.")
@click.option("--fixtures", is_flag=True, help="List *.fixture.lua files instead.")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.pass_obj
def list_cmd(flags, fixtures, paths):
    from provium.scheduler import discovery

    from .run import load_config, settings_for

    cfg = load_config(flags)  # no pre-flight: listing boots nothing (the runner lists with a stand-in VMM)
    roots = list(paths) or list(flags.paths) or list(cfg.roots) or ["."]
    suffix = discovery.FIXTURE_SUFFIX if fixtures else discovery.TEST_SUFFIX
    try:
        notices: list[str] = []
        files = discovery.discover(roots, filter=flags.filter, suffix=suffix, notices=notices)
    except discovery.DiscoveryError as exc:
        raise UserError(str(exc)) from exc
    for n in notices:
        click.echo(f"provium: {n}", err=True)
    lister = None if fixtures else _list_tests()
    settings = settings_for(flags, cfg)
    n_tests = 0
    n_errors = 0
    for f in files:
        click.echo(f"  {discovery.printable(f.path)}")
        if lister is None:
            continue
        try:
            tests = lister(f.path, settings)
        except Exception as exc:  # a file that does not load is listed with its error, and fails `list`
            click.echo(f"      (cannot list: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            n_errors += 1
            continue
        for t in tests:
            name = getattr(t, "name", t)
            click.echo(f"      {name}{_describe(getattr(t, 'meta', None) or {})}")
            n_tests += 1
    if fixtures:
        click.echo(f"\n{len(files)} fixture(s) found")
    elif lister is not None:
        click.echo(f"\n{len(files)} test file(s), {n_tests} test(s) found")
    else:
        click.echo(f"\n{len(files)} test file(s) found")
    if n_errors:
        click.echo(f"{n_errors} file(s) could not be listed", err=True)
        return 1
    return 0


@click.command("prepare", help="Run profile build commands (all, or PROFILE's) and build guest images; no VM boots.")
@click.argument("profile", required=False)
@click.pass_obj
def prepare_cmd(flags, profile):
    from provium import config as configmod

    from .run import load_config

    cfg = load_config(flags)
    if profile is not None:
        try:
            cfg.profile(profile)
        except configmod.ConfigError as exc:
            raise UserError(f"prepare: {exc}") from exc
    try:
        from provium.image import prepare
    except ImportError:
        raise UserError("prepare: the image builder (provium.image.prepare) is not available in this build") from None
    try:
        prepare(cfg, profile)
    except Exception as exc:
        if isinstance(exc, (ProviumError, OSError, ValueError)):
            raise UserError(f"prepare: {exc}") from exc
        raise
    return 0


def register(group: click.Group, run_command: click.Command) -> None:
    group.add_command(list_cmd)
    group.add_command(prepare_cmd)
    from .fixture_cmd import fixture_group
    from .tools import COMMANDS

    group.add_command(fixture_group)
    for cmd in COMMANDS:
        group.add_command(cmd)

    @group.command("help", help="Show the help.")
    @click.pass_context
    def help_cmd(ctx):
        with click.Context(run_command, info_name="provium") as c:
            click.echo(run_command.get_help(c))
        return 0

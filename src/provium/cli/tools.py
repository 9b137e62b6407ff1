"""The interactive tools: `repl`, `console` and `lsp-setup`."""

from __future__ import annotations

import click

from provium.errors import ProviumError

from .errors import UserError

# cli/run.py and the backends are imported inside the commands, when one runs.


@click.command("repl", help="An interactive Lua prompt with a booted VM bound as `vm`.")
@click.argument("profile", required=False)
@click.option("--name", default="repl", show_default=True, help="The VM's name.")
@click.option("--fixture", "fixture", default=None, metavar="NAME",
              help="Start from the VM fixture NAME (restored from the cache; built first if needed).")
@click.pass_obj
def repl_cmd(flags, profile, name, fixture):
    from .run import load_config, run_builds, run_preflight

    if not profile and fixture is None:
        raise UserError("provium repl: profile is required (or pass --fixture), e.g. `provium repl linux`")
    cfg = load_config(flags)
    if profile:
        try:
            cfg.profile(profile)
        except ProviumError as exc:
            raise UserError(f"repl: {exc}") from exc
    run_preflight(flags, cfg)
    run_builds(flags, cfg, only=profile or None)  # a fixture's profile is not known yet: all
    from provium import vmm as vmm_mod
    from provium.host import Session

    from . import repl as repl_mod

    opts = {"accel": flags.accel} if flags.vmm == "qemu" and flags.accel else {}
    session = Session(vmm_mod.create(flags.vmm, **opts), cfg)
    r = repl_mod.Repl(session, profile=profile or "", name=name, fixture=fixture, out=lambda s: click.echo(s))
    try:
        try:
            r.start()
        except ProviumError as exc:
            raise UserError(f"repl: {exc}") from exc
        return repl_mod.loop(r)
    finally:
        r.close()
        session.close()


@click.command("console", help="Boot PROFILE with its serial console on this terminal (Ctrl-A X quits).",
               context_settings={"ignore_unknown_options": True})
@click.argument("profile")
@click.option("--mem", "mem", default=None, help="Guest memory (bytes, or with K/M/G suffix); default 512M.")
@click.option("--cpus", "vcpus", type=int, default=1, show_default=True, help="vCPUs.")
@click.option("--cmdline", default=None, help="Replace the profile's kernel command line.")
@click.option("--agent", is_flag=True, help="Add provium's agent to the guest (as the tests boot it).")
@click.option("--qemu", default=None, help="QEMU binary (default qemu-system-x86_64 on PATH).")
@click.option("--print-command", is_flag=True, help="Print the QEMU command line and exit; boot nothing.")
@click.argument("qemu_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def console_cmd(flags, profile, mem, vcpus, cmdline, agent, qemu, print_command, qemu_args):
    from .run import load_config, run_builds, run_preflight
    from provium.host.values import parse_size

    from . import serial

    cfg = load_config(flags)
    if not print_command:
        run_preflight(flags, cfg)
    run_builds(flags, cfg, only=profile)
    try:
        memory = parse_size(mem, "--mem") if mem is not None else serial.DEFAULT_MEMORY
    except ProviumError as exc:
        raise UserError(str(exc)) from exc
    if vcpus < 1:
        raise UserError(f"--cpus must be at least 1, got {vcpus}")
    try:
        return serial.run(cfg, profile, print_command=print_command, memory=memory, cpus=vcpus, cmdline=cmdline,
                          agent=agent, qemu=qemu, accel=flags.accel, extra=list(qemu_args))
    except ProviumError as exc:
        raise UserError(f"console: {exc}") from exc


@click.command("lsp-setup", help="Write editor type stubs (.provium-meta/types.lua) and .luarc.json into DIR.")
@click.argument("directory", required=False, default=".", metavar="[DIR]")
@click.option("--force", is_flag=True, help="Replace an existing .luarc.json.")
def lsp_setup_cmd(directory, force):
    from provium.lua import stubs

    try:
        lines = stubs.write(directory, force=force)
    except NotADirectoryError as exc:
        raise UserError(f"lsp-setup: {exc}") from exc
    for line in lines:
        click.echo(line)
    return 0


COMMANDS = (repl_cmd, console_cmd, lsp_setup_cmd)

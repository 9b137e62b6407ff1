"""The top-level flags, shared by run mode and the subcommands, and their value parsers.

Values are parsed here, at the edge, so a bad one is a usage error (exit 2)
that names the flag and says what would be valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import click

from provium.host.errors import ArgumentError
from provium.host.values import parse_duration, parse_size

TIMEOUT_HELP = "seconds like `300`, or a number with a unit: `500ms`, `30s`, `10m`, `2h`; `0` disables"
DEFAULT_TIMEOUT = 300.0


def _timeout(ctx, param, value):
    if value is None:
        return None
    try:
        secs = parse_duration(value, "--timeout")
    except ArgumentError:
        raise click.BadParameter(f"cannot parse `{value}` (use {TIMEOUT_HELP})") from None
    return secs


def _mem(ctx, param, value):
    if value is None:
        return None
    try:
        n = parse_size(value, "--mem")
    except ArgumentError as exc:
        raise click.BadParameter(str(exc).removeprefix("--mem: ")) from exc
    if n == 0:
        raise click.BadParameter("the pool needs some memory (got 0)")
    return n


def _kv(ctx, param, values):
    out: list[tuple[str, str]] = []
    for raw in values:
        key, sep, val = raw.partition("=")
        if not sep or not key:
            raise click.BadParameter(f'expected KEY=VALUE, got "{raw}" (KEY must be non-empty)')
        out.append((key, val))
    return out


def _shard(ctx, param, value):
    if value is None:
        return None
    from provium.scheduler.shard import ShardError, parse_shard

    try:
        parse_shard(value)
    except ShardError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard: ")) from exc
    return value


def _overcommit(ctx, param, value):
    if value is None:
        return 1.0
    if value != value or value in (float("inf"), float("-inf")):
        raise click.BadParameter("must be a finite number")
    return value


COMMON_OPTIONS = [
    click.Option(["--config"], metavar="PATH", help="provium.toml to use (default: ./provium.toml if present)."),
    click.Option(["--filter"], metavar="STR", help="Only files whose path under their root contains STR."),
    click.Option(["--include-slow"], is_flag=True, help="Also run tests with meta.slow = true."),
    click.Option(["--tag", "tags"], multiple=True, metavar="TAG", help="Only tests tagged TAG (repeat: any of them)."),
    click.Option(["--no-tag", "no_tags"], multiple=True, metavar="TAG", help="Skip tests tagged TAG (wins over --tag)."),
    click.Option(["--tag-meta"], multiple=True, metavar="KEY=VALUE", callback=_kv,
                 help="Only tests whose meta KEY contains VALUE (OR within a key, AND across keys)."),
    click.Option(["--no-tag-meta"], multiple=True, metavar="KEY=VALUE", callback=_kv,
                 help="Skip tests whose meta KEY contains VALUE."),
    click.Option(["--fail-fast"], is_flag=True, help="Stop starting files after the first failed file."),
    click.Option(["--timeout"], metavar="DUR", callback=_timeout,
                 help=f"Per-file wall-clock limit (default 300s; {TIMEOUT_HELP})."),
    click.Option(["--json", "json_out"], is_flag=True, help="One JSON object per file on stdout."),
    click.Option(["--junit"], metavar="PATH", help="Also write a JUnit XML report to PATH."),
    click.Option(["--save-events"], metavar="PATH", help="Append msgpack event frames to PATH."),
    click.Option(["--events-stdout"], is_flag=True, help="Msgpack event frames on stdout (text goes to stderr)."),
    click.Option(["--events-socket"], metavar="PATH", help="Serve event frames on a unix socket at PATH."),
    click.Option(["--coverage"], is_flag=True, help="After the run, report coverage by meta `spec`."),
    click.Option(["--rerun-failed"], is_flag=True, help="Only files that failed in the previous run."),
    click.Option(["--watch"], is_flag=True, help="Re-run whenever a test file changes."),
    click.Option(["--since"], metavar="PATH", help="Only files modified after PATH."),
    click.Option(["--shard"], metavar="K/N", callback=_shard,
                 help="Run only shard K of N (CI): a split balanced by the durations file, same on every machine."),
    click.Option(["--durations-file"], metavar="PATH",
                 help="Per-file durations every run writes and --shard balances by "
                      "(default ~/.cache/provium/durations.json)."),
    click.Option(["-v", "--verbose"], is_flag=True, help="List every test and show runner output."),
    click.Option(["-q", "--quiet"], is_flag=True, help="Only failing files and the summary."),
    click.Option(["--no-progress"], is_flag=True, help="No progress bar."),
    click.Option(["--no-preflight"], is_flag=True, help="Skip the host prerequisite checks."),
    click.Option(["--log-level"], type=click.Choice(["debug", "info", "warning", "error"]), default=None,
                 help="Print provium's log at this level to stderr (also $PROVIUM_LOG; runner logs go "
                      "to their output, shown with -v)."),
    click.Option(["--keep-artifacts"], type=click.Choice(["on-failure", "always", "never"]), default="on-failure",
                 show_default=True,
                 help="Keep each file's VM evidence (console log, QMP log, QEMU argv) under one run "
                      "artifacts directory, whose path is printed."),
    click.Option(["--no-ksm"], is_flag=True, help="Accepted for compatibility; provium does not tune KSM."),
    click.Option(["--no-build"], is_flag=True, help="Skip the profiles' build commands."),
    click.Option(["--vmm"], type=click.Choice(["qemu", "local"]), default="qemu", show_default=True,
                 help="Backend: real QEMU guests, or `local` (the agent runs on this host, no VM)."),
    click.Option(["--no-zygote"], is_flag=True,
                 help="Start a new runner process for each file instead of forking it from a pre-imported "
                      "one (also PROVIUM_NO_ZYGOTE=1; see docs/running.md)."),
    click.Option(["--executor"], type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where files run: this machine's scheduler, or one Ray task per file on a Ray "
                      "cluster (needs provium[ray]; see docs/cluster.md)."),
    click.Option(["--ray-address"], metavar="ADDR",
                 help="Ray cluster to use with --executor ray (default: $RAY_ADDRESS, else a local "
                      "instance started for the run)."),
    click.Option(["--accel"], type=click.Choice(["auto", "kvm", "tcg"]), default=None,
                 help="QEMU acceleration (default: each profile's, normally auto)."),
    click.Option(["--mem"], metavar="BYTES", callback=_mem,
                 help="Pool memory (bytes or K/M/G/T; default 80% of RAM)."),
    click.Option(["--cpus"], type=click.IntRange(min=1), metavar="N", help="Pool vCPUs (default: host CPUs)."),
    click.Option(["--psi-threshold"], type=click.FloatRange(min=0), default=10.0, metavar="PCT",
                 help="Start no new file while host CPU or memory pressure (PSI some avg10) is above PCT "
                      "(default 10; 0 turns the check off)."),
    click.Option(["--cpu-overcommit"], type=float, metavar="F", callback=_overcommit,
                 help="Multiplier on the pool's CPUs, 0.5-8.0 (default 1.0)."),
]


@dataclass
class Flags:
    """The parsed top-level flags."""

    paths: list[str] = field(default_factory=list)
    config: str | None = None
    filter: str | None = None
    include_slow: bool = False
    tags: tuple = ()
    no_tags: tuple = ()
    tag_meta: list = field(default_factory=list)
    no_tag_meta: list = field(default_factory=list)
    fail_fast: bool = False
    timeout: float | None = None
    json_out: bool = False
    junit: str | None = None
    save_events: str | None = None
    events_stdout: bool = False
    events_socket: str | None = None
    coverage: bool = False
    rerun_failed: bool = False
    watch: bool = False
    since: str | None = None
    shard: str | None = None
    durations_file: str | None = None
    verbose: bool = False
    quiet: bool = False
    no_progress: bool = False
    no_preflight: bool = False
    log_level: str | None = None
    keep_artifacts: str = "on-failure"
    no_ksm: bool = False
    no_build: bool = False
    vmm: str = "qemu"
    no_zygote: bool = False
    executor: str = "local"
    ray_address: str | None = None
    accel: str | None = None
    mem: int | None = None
    cpus: int | None = None
    cpu_overcommit: float = 1.0
    psi_threshold: float = 10.0

    @property
    def file_timeout(self) -> float:
        return DEFAULT_TIMEOUT if self.timeout is None else self.timeout

    def check(self) -> None:
        if self.verbose and self.quiet:
            raise click.UsageError("-v/--verbose and -q/--quiet cannot be used together")
        if self.json_out and self.events_stdout:
            raise click.UsageError("--json and --events-stdout cannot be used together (both write to stdout)")
        if self.ray_address and self.executor != "ray":
            raise click.UsageError("--ray-address only applies with --executor ray")


def flags_from(params: dict) -> Flags:
    known = Flags.__dataclass_fields__
    f = Flags(**{k: v for k, v in params.items() if k in known})
    f.paths = list(params.get("paths") or [])
    if f.log_level:
        from provium import log

        os.environ[log.ENV] = f.log_level  # runner subprocesses inherit it
        log.configure(f.log_level)
    return f


def option_takes_value(name: str) -> bool | None:
    """For splitting argv before click sees it: does option `name` take a value?
    None when it is not one of ours."""
    for opt in COMMON_OPTIONS:
        if name in opt.opts or name in opt.secondary_opts:
            return not opt.is_flag
    return None

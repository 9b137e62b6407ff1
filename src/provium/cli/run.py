"""Run mode: config → preflight → builds → discovery → dispatch → reports.

Every user mistake surfaces as a `UserError` (printed as one `provium: ...`
line, exit 2); test failures are exit 1; a clean run is exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

import click

from provium import artifacts
from provium import config as configmod
from provium import runfiles
from provium.errors import ProviumError
from provium.events import types as ev
from provium.events.reporters import NO_FILES_JSON, TextReporter, console_for, json_lines, write_junit
from provium.events.sinks import CallbackSink, FileSink, MultiSink, Sink, StdoutSink, UnixSocketSink
from provium import hostfiles
from provium.hostfiles import HostFileError
from provium.runner.settings import RunSettings
from provium.scheduler import discovery, psi, shard
from provium.scheduler.declared import declared_claim
from provium.scheduler.dispatch import Dispatcher, DispatchOptions
from provium.scheduler.pool import size_pool
from provium.scheduler.results import FileResult

from . import rerun
from .errors import UserError
from .options import Flags

if TYPE_CHECKING:
    from .progress import ProgressBar

WATCH_INTERVAL = 0.5  # --watch compares mtimes: the change event (inotify) is not in the stdlib


def load_config(flags: Flags) -> configmod.Config:
    try:
        if flags.config is not None:
            return configmod.load(flags.config, explicit=True)
        found = configmod.find_config()
        return configmod.load(found) if found is not None else configmod.load(None)
    except configmod.ConfigError as exc:
        raise UserError(str(exc)) from exc


def run_preflight(flags: Flags, cfg: configmod.Config) -> None:
    """Host prerequisite checks for real guests; `--vmm local` boots none, so needs none."""
    if flags.no_preflight or flags.vmm == "local":
        return
    try:
        from provium import preflight
    except ImportError:  # not written yet: nothing to check with
        return
    try:
        preflight.run(cfg, vmm=flags.vmm, accel=flags.accel)
    except Exception as exc:
        if isinstance(exc, (ProviumError, OSError, ValueError)):
            raise UserError(f"{exc}\n  (skip these checks with --no-preflight)") from exc
        raise


def run_builds(flags: Flags, cfg: configmod.Config, only: str | None = None) -> None:
    """Dynamic profiles' `build` commands (all of them, or the profile `only`), before anything boots.

    For the commands that boot one given profile (`repl`, `console`) and for Ray
    runs; a local test run builds on demand instead (`profile_builder`).  Not for
    `--vmm local`: it boots no kernel, so nothing built would be used."""
    if flags.no_build or flags.vmm == "local":
        return
    names = sorted(n for n, p in cfg.profiles.items() if p.build and (only is None or n == only))
    if not names:
        return
    from provium import image

    for name in names:
        try:
            image.run_build(cfg.profiles[name])
        except Exception as exc:
            raise UserError(str(exc)) from exc


def profile_builder(flags: Flags, cfg: configmod.Config) -> Callable[[str], None] | None:
    """What the dispatcher runs when a runner first boots a VM of a profile with a
    `build` command (scheduler/coordinator.py): so only the profiles the run's VMs
    use are built, once each, and a broken build of an unused profile costs
    nothing.  None when nothing is to be built (`--no-build`, `--vmm local`)."""
    if flags.no_build or flags.vmm == "local" or not any(p.build for p in cfg.profiles.values()):
        return None
    from provium import image

    done: set[str] = set()  # once per invocation, as under --watch the builds always were

    def build(name: str) -> None:
        profile = cfg.profiles.get(name)
        if profile is not None and name not in done:
            image.run_build(profile)
            done.add(name)

    return build


def default_roots(flags: Flags, cfg: configmod.Config) -> list[str]:
    return list(flags.paths) or list(cfg.roots) or ["."]


def settings_for(flags: Flags, cfg: configmod.Config) -> RunSettings:
    tag_meta: dict[str, list[str]] = {}
    for k, v in flags.tag_meta:
        tag_meta.setdefault(k, []).append(v)
    no_tag_meta: dict[str, list[str]] = {}
    for k, v in flags.no_tag_meta:
        no_tag_meta.setdefault(k, []).append(v)
    t = flags.file_timeout
    return RunSettings(
        vmm=flags.vmm, accel=flags.accel,
        config_path=str(cfg.path.resolve()) if cfg.path else None,
        include_slow=flags.include_slow, tags=list(flags.tags), no_tags=list(flags.no_tags),
        tag_meta=tag_meta, no_tag_meta=no_tag_meta, filter=flags.filter,
        file_timeout=t if t else None,
        pool_memory=flags.mem, pool_cpus=flags.cpus, fail_fast=flags.fail_fast, verbose=flags.verbose,
    )


def test_filter_env(flags: Flags) -> str:
    """PROVIUM_TEST_FILTER, the reference's way of handing test filters to runners."""
    return json.dumps({
        "include_slow": flags.include_slow, "tag": list(flags.tags), "no_tag": list(flags.no_tags),
        "tag_meta": [{"key": k, "value": v} for k, v in flags.tag_meta],
        "no_tag_meta": [{"key": k, "value": v} for k, v in flags.no_tag_meta],
    })


@dataclass
class Streams:
    """Where human text and machine output go for this run."""

    human: TextIO
    interactive: bool

    @classmethod
    def for_flags(cls, flags: Flags) -> "Streams":
        human = sys.stderr if flags.events_stdout else sys.stdout
        interactive = sys.stderr.isatty() and not flags.json_out and not flags.events_stdout
        return cls(human=human, interactive=interactive)


class Run:
    """One invocation of run mode (several iterations under --watch)."""

    def __init__(self, flags: Flags, cfg: configmod.Config) -> None:
        self.flags = flags
        self.cfg = cfg
        self.roots = default_roots(flags, cfg)
        self.streams = Streams.for_flags(flags)
        self.artifacts: artifacts.RunArtifacts | None = None
        # rich only for a terminal: a pipe or a file gets the same bytes without it.
        self.console = console_for(self.streams.human)
        self.socket_sink: UnixSocketSink | None = None
        self.said: set[str] = set()
        self.host_ready = False
        self.builder = profile_builder(flags, cfg)
        # Sized once: under --watch a clamp notice is said once, not per iteration.
        self.pool = size_pool(vmm=flags.vmm, memory=flags.mem, cpus=flags.cpus, overcommit=flags.cpu_overcommit)

    # ---- selection -------------------------------------------------------------

    def discover(self) -> list[discovery.Discovered]:
        notices: list[str] = []
        try:
            found = discovery.discover(self.roots, filter=self.flags.filter, notices=notices)
        except discovery.DiscoveryError as exc:
            raise UserError(str(exc)) from exc
        for n in notices:
            if n not in self.said:  # under --watch: once, not every half second
                self.said.add(n)
                print(f"provium: {n}", file=sys.stderr, flush=True)
        return found

    def select(self, files: list[discovery.Discovered], *, use_rerun: bool) -> list[discovery.Discovered] | None:
        """Apply --shard, --rerun-failed and --since; None means "nothing to re-run" (already reported)."""
        if self.flags.shard:
            files = self.shard(files)
        if use_rerun:
            path = rerun.state_path()
            try:
                state = rerun.load(path)
            except OSError as exc:
                raise UserError(str(exc)) from exc
            if not state:
                print(f"provium --rerun-failed: no prior failure state at `{path}` — nothing to re-run. "
                      f"Run `provium <paths>` once to populate.", file=sys.stderr)
                return None
            files = [f for f in files if rerun.canonical(f.path) in state]
        if self.flags.since:
            files = discovery.newer_than(files, self.flags.since)
        return files

    def durations_path(self) -> Path:
        return Path(self.flags.durations_file) if self.flags.durations_file else shard.default_path()

    def shard(self, files: list[discovery.Discovered]) -> list[discovery.Discovered]:
        """--shard K/N, on the whole discovered set (so every shard splits alike)."""
        try:
            k, n = shard.parse_shard(self.flags.shard or "")
            durations = shard.load_durations(self.durations_path())
        except (shard.ShardError, OSError) as exc:
            raise UserError(str(exc)) from exc
        mine = shard.select([d.path for d in files], k, n, durations)
        return [d for d in files if d.path in mine]

    def save_durations(self, results: list[FileResult]) -> None:
        ran = [(r.path, r.duration_ns / 1e9) for r in results if r.not_run is None and r.duration_ns]
        if not ran:
            return
        path = self.durations_path()
        if self.flags.shard:
            # A shard must not change the split its sibling shards compute from
            # PATH: its durations go to a part beside it (PATH.K-of-N) to merge later.
            k, n = shard.parse_shard(self.flags.shard)
            path = shard.part_path(path, k, n)
        try:
            shard.save_durations(path, ran)
        except OSError as exc:
            print(f"provium: could not save the durations file: {exc}", file=sys.stderr)

    # ---- one iteration -----------------------------------------------------------

    def sinks(self, *, truncate: bool, coverage_file: str | None) -> MultiSink:
        f = self.flags
        sinks: list[Sink] = []
        try:
            if f.save_events:
                sinks.append(FileSink(f.save_events, truncate=truncate))
            if f.events_stdout:
                sinks.append(StdoutSink())
            if coverage_file:
                sinks.append(FileSink(coverage_file, truncate=True))
            if f.events_socket:
                if self.socket_sink is None:
                    self.socket_sink = UnixSocketSink(f.events_socket)
                sinks.append(self.socket_sink)
        except OSError as exc:
            for s in sinks:
                if s is not self.socket_sink:
                    s.close()
            raise UserError(str(exc.strerror if exc.strerror else exc)) from exc
        return MultiSink(sinks)

    def once(self, *, use_rerun: bool, truncate_events: bool) -> int:
        f = self.flags
        started = time.monotonic()
        selected = self.select(self.discover(), use_rerun=use_rerun)
        if selected is None:
            return 0
        if not selected:
            if f.filter:  # exit 0 stays (nothing failed), but a typo in a filter must be visible
                print(f"provium: warning: --filter `{f.filter}` matched no test file", file=sys.stderr, flush=True)
            if f.json_out:
                print(json.dumps(NO_FILES_JSON), file=self.streams.human, flush=True)
            else:
                print("provium: no *.test.lua files found", file=self.streams.human, flush=True)
            return 0
        if not self.host_ready:
            # Only now: arguments are validated and there is something to boot, so a
            # typo in a path never waits for a KVM probe or a profile build.
            run_preflight(f, self.cfg)
            if f.executor == "ray":
                run_builds(f, self.cfg)  # the cluster's nodes build nothing: all, up front, as before
            self.host_ready = True

        coverage_file = None
        if f.coverage and not f.save_events:
            coverage_file = os.path.join(tempfile.gettempdir(), f"provium-coverage-{os.getpid()}.msgpack")
        try:
            sink = self.sinks(truncate=truncate_events, coverage_file=coverage_file)
            work_dir = runfiles.make_run_dir()  # sweeps those of killed runs first
            self.artifacts = artifacts.RunArtifacts(f.keep_artifacts)
            try:
                results = self.dispatch(selected, sink, work_dir)
            except BaseException:
                self.artifacts.discard()
                raise
            finally:
                for s in sink.sinks:
                    if s is not self.socket_sink:
                        s.close()
                shutil.rmtree(work_dir, ignore_errors=True)
            elapsed = time.monotonic() - started

            self.report(results, elapsed)
            self.artifacts.finish(results)
            try:
                rerun.update(results)
            except OSError as exc:
                print(f"provium: could not save the rerun state: {exc}", file=sys.stderr)
            self.save_durations(results)
            if f.junit:
                try:
                    write_junit(f.junit, results, elapsed=elapsed)
                except HostFileError as exc:
                    raise UserError(str(exc)) from exc
                except OSError as exc:
                    raise UserError(f"--junit: cannot write `{f.junit}`: {exc.strerror or exc}") from exc
            code = 0 if all(r.passed for r in results) else 1
            if f.coverage:
                if not self.coverage_report(f.save_events or coverage_file):
                    code = 1
        finally:
            if coverage_file:
                try:
                    os.unlink(coverage_file)
                except FileNotFoundError:
                    pass
        return code

    def dispatch(self, files: list[discovery.Discovered], sink: MultiSink, work_dir: str) -> list[FileResult]:
        f = self.flags
        pool = self.pool
        env = dict(os.environ)
        env["PROVIUM_TEST_FILTER"] = test_filter_env(f)
        env.update(self.artifacts.env() if self.artifacts is not None else {})
        opts = DispatchOptions(
            settings_json=settings_for(f, self.cfg).to_json(), work_dir=work_dir, pool=pool,
            file_timeout=f.file_timeout or None, fail_fast=f.fail_fast, env=env,
            psi_threshold=f.psi_threshold, psi_paths=psi.DEFAULT_PATHS if f.psi_threshold > 0 else (),
            zygote=False if f.no_zygote else None,
            build_profile=self.builder,
        )
        for d in files:
            sink.emit(ev.FileDiscovered(path=discovery.printable(d.path), fixture_refs=discovery.fixture_refs(d.path),
                                        declared_claim=declared_claim(d.path)))
        reporter = TextReporter(self.console, verbose=f.verbose, quiet=f.quiet)
        total = len(files)
        done = 0
        bar: ProgressBar | None = None
        if self.streams.interactive and not f.no_progress and not f.verbose:
            from rich.console import Console

            from .progress import ProgressBar

            bar = ProgressBar(Console(file=sys.stderr), total)
            sink.add(CallbackSink(bar.on_event))

        def on_done(index: int, result: FileResult) -> None:
            nonlocal done
            done += 1
            if not self.streams.interactive or not reporter.shows(result):
                return
            lines = reporter.file_lines(result, prefix=f"[{done}/{total}] ")
            for line in lines:
                (bar.print(line) if bar else self.console.print(line))

        if f.executor == "ray":
            return self._dispatch_ray(files, sink, opts, env, on_done, bar)
        dispatcher = Dispatcher(sink, opts, on_file_done=on_done)
        if bar:
            with bar:
                return dispatcher.run(files)
        return dispatcher.run(files)

    def _dispatch_ray(self, files: list[discovery.Discovered], sink: MultiSink, opts: DispatchOptions,
                      env: dict[str, str], on_done, bar: ProgressBar | None) -> list[FileResult]:
        f = self.flags
        address = f.ray_address or os.environ.get("RAY_ADDRESS") or ""
        host = address.rpartition(":")[0] if ":" in address else address
        if host in ("", "127.0.0.1", "localhost", "::1", "[::1]"):
            # Ray turns a loopback address into this machine's outward address before it
            # connects, and would miss a cluster bound to 127.0.0.1 (ray start
            # --node-ip-address=127.0.0.1, the local instance, a test's Cluster).  This
            # switch makes it take loopback as this node's address; it must be set
            # before `import ray`.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            from provium.scheduler import ray_executor  # `import ray` is slow: only for --executor ray
        except ImportError as exc:
            raise click.UsageError(
                f"--executor ray needs Ray: pip install 'provium[ray]' ({exc})") from exc
        # Only what the runners need from this environment goes to the remote nodes.
        keep = {k: v for k, v in env.items() if k.startswith("PROVIUM_")}
        from provium.fixtures.key import roots_of
        from provium.scheduler.charge import ChargeRules

        rules = ChargeRules(pool=opts.pool, profiles=self.cfg.profiles, accel=f.accel,
                            roots=tuple(roots_of(self.cfg)))
        ropts = ray_executor.RayOptions(
            settings_json=opts.settings_json, pool=opts.pool, vmm=f.vmm, address=f.ray_address,
            project_dir=os.getcwd(), file_timeout=opts.file_timeout, fail_fast=f.fail_fast, env=keep,
            rules=rules)
        executor = ray_executor.RayExecutor(sink, ropts, on_file_done=on_done)
        try:
            if bar:
                with bar:
                    results = executor.run(files)
            else:
                results = executor.run(files)
        except ray_executor.RayExecutorError as exc:
            raise click.UsageError(str(exc)) from exc
        if executor.nodes:
            print("provium: ray: " + ", ".join(f"{n} ran {k} file(s)" for n, k in sorted(executor.nodes.items())),
                  file=sys.stderr)
        return results

    def report(self, results: list[FileResult], elapsed: float) -> None:
        f = self.flags
        if f.json_out:
            self.streams.human.write(json_lines(results))
            self.streams.human.flush()
            return
        reporter = TextReporter(self.console, verbose=f.verbose, quiet=f.quiet)
        if not self.streams.interactive:
            reporter.print_batch(results)
        reporter.print_summary(results, elapsed)

    def coverage_report(self, path: str | None) -> bool:
        out = sys.stderr if (self.flags.json_out or self.flags.events_stdout) else self.streams.human
        if path is None:
            return False
        from provium.events.coverage import aggregate_stream  # only with --coverage

        try:
            with open(path, "rb") as fh:
                report = aggregate_stream(fh, "spec")
        except Exception as exc:
            print(f"provium: --coverage: cannot read the event stream `{path}`: {exc}", file=sys.stderr)
            return False
        print(file=out)
        print(report.render(), file=out, flush=True)
        return True

    # ---- watch ---------------------------------------------------------------------

    def watch(self) -> int:
        files = self.discover()
        print(f"provium --watch: monitoring {len(files)} files" +
              ("" if files else " (none yet; waiting for *.test.lua files to appear)"), file=sys.stderr, flush=True)
        prev = discovery.snapshot_mtimes(files)
        last_error = None
        try:
            if files:
                self.once(use_rerun=self.flags.rerun_failed, truncate_events=True)
                prev = discovery.snapshot_mtimes(self.discover())
            while True:
                time.sleep(WATCH_INTERVAL)
                try:
                    snap = discovery.snapshot_mtimes(self.discover())
                    if snap == prev:
                        continue
                    print("provium --watch: change detected, re-running", file=sys.stderr, flush=True)
                    self.once(use_rerun=False, truncate_events=True)
                    prev = discovery.snapshot_mtimes(self.discover())
                    last_error = None
                except UserError as exc:
                    if str(exc) != last_error:  # say it once, not every half second
                        print(f"provium --watch: iteration failed: {exc}", file=sys.stderr, flush=True)
                        last_error = str(exc)
        except KeyboardInterrupt:
            return 0

    def close(self) -> None:
        if self.socket_sink is not None:
            self.socket_sink.close()
            self.socket_sink = None


def _terminate_as_interrupt(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so runners are killed and temp files removed.
    raise KeyboardInterrupt


def run_mode(flags: Flags) -> int:
    flags.check()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    if flags.junit:  # before anything runs: a report that cannot be written should not cost a run
        try:
            hostfiles.check_parent(flags.junit, "--junit")
        except HostFileError as exc:
            raise UserError(str(exc)) from exc
    cfg = load_config(flags)
    from .fixture_cmd import evict_at_startup

    evict_at_startup(cfg)
    run = Run(flags, cfg)  # the host is checked (KVM probe) and builds run once files are found
    try:
        if flags.watch:
            return run.watch()
        return run.once(use_rerun=flags.rerun_failed, truncate_events=False)
    finally:
        run.close()

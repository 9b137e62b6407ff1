"""`provium fixture list | build PATH | rebuild PATH | clean | stale`.

Uses the same key computation and cache as the runner (provium.fixtures); a
build boots the fixture's VMs with the run's VMM flags (`--vmm`, `--accel`)."""

from __future__ import annotations

import os
import shutil

import click

from .errors import UserError


# cli/run.py loads only when a fixture command runs (not for `provium --help`).
def load_config(flags):
    from .run import load_config as load

    return load(flags)


def run_preflight(flags, cfg) -> None:
    from .run import run_preflight as check

    check(flags, cfg)


def settings_for(flags, cfg):
    from .run import settings_for as settings

    return settings(flags, cfg)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _store(cfg):
    from provium.fixtures.store import Store, cache_dir

    return Store(cache_dir(cfg))


def _build(flags, cfg, name: str, rebuild: bool) -> None:
    from provium.fixtures.builder import FixtureError, Fixtures
    from provium.fixtures.key import FixtureNotFound, KeyMaker, find_fixture
    from provium.host.session import Session
    from provium.runner.file_runner import make_vmm

    keys = KeyMaker(cfg, flags.vmm or "qemu")
    try:
        path = find_fixture(name, keys.roots)
        key = keys.key_of_file(path)
    except FixtureNotFound as exc:
        raise UserError(str(exc)) from None
    store = _store(cfg)
    if rebuild:
        store.remove(key)
        click.echo(f"  evicted cache entry for `{name}`; rebuilding…")
    elif store.has(key, "vm") or store.has(key, "lab"):
        click.echo(f"  already built: {store.snap(key) if store.has(key, 'vm') else store.lab(key)}")
        return
    run_preflight(flags, cfg)
    settings = settings_for(flags, cfg)
    with Session(make_vmm(settings), cfg) as session:
        fx = Fixtures(session, cfg, file_path=str(path))
        try:
            _, kind, _ = fx.ensure_built(name, None)
        except FixtureError as exc:
            raise UserError(str(exc)) from None
    word = "rebuilt" if rebuild else "built"
    if kind == "vm":
        click.echo(f"  {word}: {store.snap(key)}")
    else:
        click.echo(f"  {word} lab fixture: {store.lab(key)}")


@click.group("fixture", help="Manage the fixture cache (list, build, rebuild, clean, stale).")
def fixture_group():
    pass


@fixture_group.command("list", help="List cache entries with their sizes.")
@click.pass_obj
def list_cmd(flags):
    cfg = load_config(flags)
    store = _store(cfg)
    if not store.root.is_dir():
        click.echo(f"(no cache directory at {store.root})")
        return 0
    entries = store.entries()
    for e in entries:
        click.echo(f"  {_human(e.size):>12}  {e.kind:<3}  {e.key}")
    click.echo(f"\n{len(entries)} entries, {_human(sum(e.size for e in entries))}")
    return 0


@fixture_group.command("build", help="Build PATH's fixture unless it is cached.")
@click.argument("name")
@click.pass_obj
def build_cmd(flags, name):
    _build(flags, load_config(flags), name, rebuild=False)
    return 0


@fixture_group.command("rebuild", help="Evict PATH's cache entry and build it again.")
@click.argument("name")
@click.pass_obj
def rebuild_cmd(flags, name):
    _build(flags, load_config(flags), name, rebuild=True)
    return 0


@fixture_group.command("clean", help="Delete every cache entry.")
@click.pass_obj
def clean_cmd(flags):
    cfg = load_config(flags)
    store = _store(cfg)
    if not store.root.is_dir():
        click.echo("  cache directory does not exist")
        return 0
    n = 0
    for e in os.scandir(store.root):
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            n += 1
        except OSError as exc:
            click.echo(f"  skipping {e.path}: {exc.strerror or exc}")
    click.echo(f"  removed {n} cache entries")
    return 0


@fixture_group.command("stale", help="List fixtures whose cache entry is missing.")
@click.pass_obj
def stale_cmd(flags):
    from provium.fixtures.key import SUFFIX, KeyMaker

    cfg = load_config(flags)
    store = _store(cfg)
    keys = KeyMaker(cfg, flags.vmm or "qemu")
    n = 0
    for root in keys.roots:
        for dirpath, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                if f.endswith(SUFFIX):
                    p = os.path.join(dirpath, f)
                    key = keys.key_of_file(__import__("pathlib").Path(p))
                    if not store.has(key, "vm") and not store.has(key, "lab"):
                        click.echo(p)
                        n += 1
    click.echo(f"\n{n} stale fixture(s)")
    return 0


def evict_at_startup(cfg) -> None:
    """Run-mode start-up: trim the cache to `cache_max_size` (errors ignored)."""
    try:
        store = _store(cfg)
        if store.root.is_dir():
            store.evict(cfg.cache_max_size)
    except Exception:  # noqa: BLE001, S110 - eviction must never stop a run
        pass

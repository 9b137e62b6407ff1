"""Guest images: the agent overlay, the built-in `linux` initramfs, boot composition, `prepare`.

    prepare_profile(profile) -> (kernel, initrd)   the profile's own images (built-in: built here)
    compose(profile, ...) -> BootImages            kernel, initrd with the agent (+ files), cmdline
    prepare(config, profile_name=None)             `provium prepare`: build images, run `build` commands

Everything built is cached under the cache dir (`[provium] cache_dir`,
$PROVIUM_CACHE_DIR, $XDG_CACHE_HOME/provium or ~/.cache/provium), in `images/`,
named by the sha256 of its inputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..config import Config, ConfigError, Profile
from .boot import RDINIT, BootImages, agent_initrd, boot_cmdline, compose, files_segment, overlay_path, prepare_profile
from .errors import ImageError

__all__ = [
    "RDINIT", "BootImages", "ImageError", "agent_initrd", "boot_cmdline", "compose", "files_segment",
    "overlay_path", "prepare", "prepare_profile", "run_build",
]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_build(profile: Profile, say: Callable[[str], None] = _say) -> None:
    """Run a dynamic profile's `build` command (no-op without one).

    `{out}` is created first and never wiped; the command runs through `sh -c`
    with our environment and stdio, from our cwd, or from the profile's own
    directory for profiles loaded by `[profiles] from_dir`.
    """
    if not profile.build:
        return
    out = Path(profile.build_out) if profile.build_out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cwd = None
    if (Path(profile.base_dir) / "profile.provium.toml").is_file():
        cwd = profile.base_dir
    say(f"provium: building profile `{profile.name}` → {out}")
    try:
        rc = subprocess.run(["sh", "-c", profile.build], cwd=cwd).returncode
    except OSError as exc:
        raise ImageError(f"profile `{profile.name}`: build command could not start: {exc}") from exc
    if rc != 0:
        code = f"exit code {rc}" if rc >= 0 else f"killed by signal {-rc}"
        raise ImageError(f"profile `{profile.name}`: build command failed ({code})")


def prepare(config: Config, profile_name: str | None = None, *, say: Callable[[str], None] = _say) -> None:
    """`provium prepare [PROFILE]`.

    With a name: that profile only: its `build` (a profile without one is a silent
    no-op), or for the built-in `linux` profile its kernel lookup, initramfs and
    the agent overlay, or for a `distro` profile (`debian`) its root filesystem image.
    Without: the `linux` images, every profile's `build` and every distro profile of
    the config file (not the built-in `debian`: minutes on a first build), in name
    order, stopping at the first failure.
    """
    if profile_name is not None:
        if profile_name not in config.profiles:
            where = f"`{config.path}`" if config.path else "provium.toml"
            raise ConfigError(f"provium prepare: profile `{profile_name}` not found in {where}")
        names = [profile_name]
    else:
        names = sorted(config.profiles)
    cache_dir = config.cache_dir
    overlay_done = False
    for name in names:
        p = config.profiles[name]
        if p.distro:
            if p.builtin and profile_name is None:
                continue  # the built-in `debian` takes a minute to build: only when named (or booted)
            from . import debian

            img = debian.ensure(p.packages, cache_dir, say)
            kernel, initrd = prepare_profile(p, cache_dir)
            say(f"provium: profile `{name}`: image {img}, kernel {kernel}, initramfs {initrd}")
            continue
        if p.builtin:
            kernel, initrd = prepare_profile(p, cache_dir)
            say(f"provium: profile `{name}`: kernel {kernel}, initramfs {initrd}")
        else:
            run_build(p, say)
        if p.builtin and p.inject_agent and not p.agent_overlay_path and not overlay_done:
            say(f"provium: agent overlay {overlay_path(p, cache_dir)}")
            overlay_done = True


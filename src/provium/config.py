"""`provium.toml`: the run settings and the guest profiles.

Read with `tomllib`.  An unknown top-level table, or an unknown key in
`[provium]` or in a profile, is an error naming it (the reference ignores them; a typo should not silently change a run,
see docs/differences.md); paths are checked when a VM boots, not here.  The built-in `linux`
profile exists even with no config file at all.
"""

from __future__ import annotations

import errno
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from . import errors, hostfiles
from .disk.spec import parse_disk
from .vmm.base import DiskSpec

BUILTIN_PROFILE = "linux"
DEBIAN_PROFILE = "debian"  # built-in too: a Debian 12 guest with systemd (image/debian.py)
VALID_DISTROS = ("debian",)
VALID_GUEST_OS = ("linux", "peios")
VALID_MACHINES = ("q35", "microvm")
VALID_ACCEL = ("auto", "kvm", "tcg")


class ConfigError(errors.ConfigError):
    """provium.toml could not be read, parsed or validated."""


@dataclass
class Profile:
    name: str
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    cmdline_file: str | None = None
    guest_os: str = "linux"
    inject_agent: bool = True
    agent_overlay_path: str | None = None
    agent_boot_timeout: float | None = None
    boot_marker: str | None = None  # inject_agent = false: boot ends when the console shows it
    build: str | None = None
    build_out: str | None = None
    root: str | None = None
    disks: list[DiskSpec] = field(default_factory=list)
    # Our additions (see docs/differences.md): VMM knobs per profile.
    machine: str = "q35"
    accel: str = "auto"
    memory: int | None = None  # bytes
    cpus: int | None = None
    builtin: bool = False
    # Ours: a distribution root filesystem provium builds (image/debian.py), booted from a
    # disk through a per-VM copy-on-write overlay, with these packages added.
    distro: str | None = None
    packages: list[str] = field(default_factory=list)
    base_dir: str = "."  # relative paths resolve against this

    @overload
    def resolve(self, p: str) -> Path: ...
    @overload
    def resolve(self, p: str | None) -> Path | None: ...
    def resolve(self, p: str | None) -> Path | None:
        if not p:
            return None
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def full_cmdline(self) -> str:
        """cmdline_file's words first, then the inline cmdline; whitespace collapsed."""
        words: list[str] = []
        cmdline_path = self.resolve(self.cmdline_file)
        if cmdline_path is not None:
            words += cmdline_path.read_text().split()
        words += self.cmdline.split()
        return " ".join(words)


@dataclass
class Config:
    path: Path | None = None
    roots: list[str] = field(default_factory=list)
    cache_dir: str | None = None
    cache_max_size: int = 20 << 30
    profiles: dict[str, Profile] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            have = ", ".join(sorted(self.profiles)) or "none defined"
            where = f"`{self.path}`" if self.path else "provium.toml (none loaded; the built-in profile is `linux`)"
            raise ConfigError(f"profile `{name}` not found in {where} (have: {have})") from None


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.I)


def parse_size(text: Any, what: str) -> int:
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ConfigError(f"{what}: expected a size like \"20G\", got {type(text).__name__}")
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"{what}: {text!r} is not a size (use digits with an optional K/M/G/T suffix)")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


# The kernel command line of the built-in profile, and of any profile that sets
# neither `cmdline` nor `cmdline_file`: the serial console provium reads, no boot
# chatter on it, and a panic that ends QEMU at once instead of hanging the test.
DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"


def builtin_linux_profile() -> Profile:
    """Kernel and initrd are filled in by provium.image when the profile is first booted."""
    return Profile(name=BUILTIN_PROFILE, builtin=True, cmdline=DEFAULT_CMDLINE)


# A systemd guest boots for longer than the agent alone: under TCG about 10 s to the
# agent on an idle machine, several times that on a loaded one.
DEBIAN_BOOT_TIMEOUT = 180.0


def builtin_debian_profile() -> Profile:
    """Image, kernel and initramfs are built by provium.image.debian when first booted or prepared."""
    return Profile(name=DEBIAN_PROFILE, builtin=True, cmdline=DEFAULT_CMDLINE, distro="debian",
                   agent_boot_timeout=DEBIAN_BOOT_TIMEOUT)


def _want(table: dict, key: str, types: tuple, where: str) -> Any:
    v = table[key]
    if isinstance(v, bool) and bool not in types:
        v = None
    if v is None or not isinstance(v, types):
        names = "/".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: `{key}` must be a {names}, got {type(table[key]).__name__}")
    return v


# Every table and key provium.toml may hold; anything else is a typo and an error naming it.
TOP_TABLES = ("provium", "profiles")
PROVIUM_KEYS = ("roots", "cache_dir", "cache_max_size")
PROFILE_KEYS = ("kernel", "initrd", "cmdline", "cmdline_file", "guest_os", "inject_agent", "agent_overlay_path",
                "agent_boot_timeout", "boot_marker", "build", "build_out", "root", "disks", "machine", "accel", "memory", "cpus",
                "distro", "packages")
# What provium makes itself for a `distro` profile: setting them too is a contradiction.
DISTRO_EXCLUDES = ("kernel", "initrd", "build", "root", "inject_agent", "agent_overlay_path", "boot_marker")


def _known_keys(table: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(k for k in table if k not in valid)
    if unknown:
        names = ", ".join(f"`{k}`" for k in unknown)
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {names} "
                          f"(valid: {', '.join(valid)})")


def _profile(name: str, t: dict, base_dir: Path, where: str) -> Profile:
    w = f"{where}: profile `{name}`"
    _known_keys(t, PROFILE_KEYS, w)
    p = Profile(name=name, base_dir=str(base_dir))
    for key in ("kernel", "initrd", "cmdline", "cmdline_file", "agent_overlay_path", "build", "build_out", "root",
                "boot_marker"):
        if key in t:
            setattr(p, key, _want(t, key, (str,), w))
    if "guest_os" in t:
        p.guest_os = _want(t, "guest_os", (str,), w)
        if p.guest_os not in VALID_GUEST_OS:
            raise ConfigError(f"{w}: guest_os {p.guest_os!r} is not supported (valid: {', '.join(VALID_GUEST_OS)})")
    if "inject_agent" in t:
        p.inject_agent = _want(t, "inject_agent", (bool,), w)
    if p.boot_marker is not None and (p.inject_agent or not p.boot_marker):
        why = "an empty string never marks anything" if not p.boot_marker else \
            "it is only for `inject_agent = false` (with the agent, the boot ends when the agent answers)"
        raise ConfigError(f"{w}: `boot_marker`: {why}")
    if "agent_boot_timeout" in t:
        v = float(_want(t, "agent_boot_timeout", (int, float), w))
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{w}: agent_boot_timeout must be a finite number of seconds > 0")
        p.agent_boot_timeout = v
    if "machine" in t:
        p.machine = _want(t, "machine", (str,), w)
        if p.machine not in VALID_MACHINES:
            raise ConfigError(f"{w}: machine {p.machine!r} is not supported (valid: {', '.join(VALID_MACHINES)})")
    if "accel" in t:
        p.accel = _want(t, "accel", (str,), w)
        if p.accel not in VALID_ACCEL:
            raise ConfigError(f"{w}: accel {p.accel!r} is not valid (valid: {', '.join(VALID_ACCEL)})")
    if "memory" in t:
        p.memory = parse_size(t["memory"], f"{w}: memory")
    if "cpus" in t:
        p.cpus = _want(t, "cpus", (int,), w)
        if p.cpus < 1:
            raise ConfigError(f"{w}: cpus must be >= 1")
    if "disks" in t:
        disks = _want(t, "disks", (list,), w)
        for i, d in enumerate(disks):
            p.disks.append(parse_disk(d, f"{w}: disks[{i + 1}]", f"disk{i}", ConfigError))
    if not p.cmdline.strip() and not p.cmdline_file:
        p.cmdline = DEFAULT_CMDLINE  # what the built-in profile boots with (docs/running.md)
    _distro(p, t, w)
    return p


def _distro(p: Profile, t: dict, w: str) -> None:
    """`distro = "debian"` and `packages = [...]` (docs/guests.md)."""
    if "distro" in t:
        p.distro = _want(t, "distro", (str,), w)
        if p.distro not in VALID_DISTROS:
            raise ConfigError(f"{w}: distro {p.distro!r} is not supported (valid: {', '.join(VALID_DISTROS)})")
        clash = [k for k in DISTRO_EXCLUDES if k in t]
        if clash:
            raise ConfigError(f"{w}: `{clash[0]}` cannot be set with `distro = \"{p.distro}\"` (provium builds the "
                              "kernel's initramfs, the root filesystem and the agent of a distro profile itself)")
        if "agent_boot_timeout" not in t:
            p.agent_boot_timeout = DEBIAN_BOOT_TIMEOUT
    if "packages" in t:
        if p.distro is None:
            raise ConfigError(f"{w}: `packages` needs `distro = \"debian\"` (only a distro profile installs packages)")
        from .image.debian import check_packages
        from .image.errors import ImageError

        try:
            p.packages = check_packages(t["packages"], w)
        except ImageError as exc:
            raise ConfigError(str(exc)) from None


def _expand_out(p: Profile) -> None:
    out = p.build_out or str(build_dir_for(p.name))
    for key in ("build", "kernel", "root", "initrd", "cmdline", "cmdline_file", "agent_overlay_path"):
        v = getattr(p, key)
        if isinstance(v, str) and "{out}" in v:
            setattr(p, key, v.replace("{out}", out))
    p.build_out = out


def build_dir_for(name: str) -> Path:
    if os.environ.get("PROVIUM_BUILD_DIR"):
        return Path(os.environ["PROVIUM_BUILD_DIR"]) / name
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "provium" / "builds" / name
    home = Path.home()
    if home.exists():
        return home / ".cache" / "provium" / "builds" / name
    return Path("/tmp/provium-builds") / name


MAX_CONFIG_BYTES = 4 << 20
CONFIG_NAME = "provium.toml"


def find_config(start: str | os.PathLike = ".") -> Path | None:
    """The nearest `provium.toml` in `start` or a directory above it, as git and pytest search.

    The search stops after a directory holding `.git` (the project's top), so a
    checkout never picks up a stray config from a directory that contains it.
    """
    d = Path(start).resolve()
    while True:
        cand = d / CONFIG_NAME
        if os.path.lexists(cand):
            return Path(os.path.relpath(cand))
        if (d / ".git").exists() or d.parent == d:
            return None
        d = d.parent


def _read(path: Path) -> bytes:
    """A config file's bytes: a regular file of bounded size (a FIFO must not block the run)."""
    try:
        raw = hostfiles.read_file(path, limit=MAX_CONFIG_BYTES, what="config")
    except hostfiles.HostFileError as exc:
        raise ConfigError(f"read `{path}`: {exc.strerror or exc}") from exc
    if raw is None:
        missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        raise ConfigError(f"read `{path}`: {missing.strerror}") from missing
    return raw


def load(path: str | os.PathLike | None, *, explicit: bool = False) -> Config:
    """Load a config.  With no file (and not `explicit`), defaults plus the built-in profile."""
    cfg = Config()
    if path is None or (not explicit and not Path(path).exists()):
        cfg.profiles[BUILTIN_PROFILE] = builtin_linux_profile()
        cfg.profiles[DEBIAN_PROFILE] = builtin_debian_profile()
        return cfg
    import tomllib  # only with a config file: most runs of a project without one never parse TOML

    path = Path(path)
    raw = _read(path)
    try:
        data = tomllib.loads(raw.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"parse `{path}`: {exc}") from exc
    where = f"invalid config in `{path}`"
    unknown = sorted(k for k in data if k not in TOP_TABLES)
    if unknown:
        # A table is shown as `[name]`, a bare key (`title = 1`) as `name`.
        names = ", ".join(f"[{k}]" if isinstance(data[k], dict) else f"`{k}`" for k in unknown)
        hint = " (did you mean [profiles.NAME]?)" if "profile" in unknown else ""
        raise ConfigError(f"{where}: unknown top-level table{'s' if len(unknown) > 1 else ''} {names}{hint} "
                          f"(valid: {', '.join(f'[{t}]' for t in TOP_TABLES)}, [profiles.NAME])")
    cfg.path = path
    base = path.parent.resolve()
    top = data.get("provium", {})
    if not isinstance(top, dict):
        raise ConfigError(f"{where}: [provium] must be a table")
    _known_keys(top, PROVIUM_KEYS, f"{where}: [provium]")
    if "roots" in top:
        roots = _want(top, "roots", (list,), f"{where}: [provium]")
        if not all(isinstance(r, str) for r in roots):
            raise ConfigError(f"{where}: [provium] `roots` must be an array of strings")
        cfg.roots = [str(base / r) if not os.path.isabs(r) else r for r in roots]
    if "cache_dir" in top:
        cfg.cache_dir = _want(top, "cache_dir", (str,), f"{where}: [provium]")
    if "cache_max_size" in top:
        if not isinstance(top["cache_max_size"], str):
            raise ConfigError(f"{where}: [provium] `cache_max_size` must be a string such as \"20G\"")
        cfg.cache_max_size = parse_size(top["cache_max_size"], f"{where}: [provium] cache_max_size")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{where}: [profiles] must be a table")
    for name, t in profiles.items():
        if name == "from_dir":
            continue
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: [profiles.{name}] must be a table")
        cfg.profiles[name] = _profile(name, t, base, where)
    if "from_dir" in profiles:
        d = base / _want(profiles, "from_dir", (str,), f"{where}: [profiles]")
        found = sorted(p for p in d.glob("*/profile.provium.toml")) if d.is_dir() else []
        if not found:
            raise ConfigError(f"{where}: [profiles] from_dir `{d}` has no */profile.provium.toml")
        for f in found:
            name = f.parent.name
            if name in cfg.profiles:
                raise ConfigError(f"{where}: profile `{name}` from from_dir clashes with an inline profile")
            try:
                sub = tomllib.loads(_read(f).decode("utf-8", "replace"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"parse `{f}`: {exc}") from exc
            cfg.profiles[name] = _profile(name, sub, f.parent, f"invalid config in `{f}`")
    for p in cfg.profiles.values():
        _expand_out(p)
    cfg.profiles.setdefault(BUILTIN_PROFILE, builtin_linux_profile())
    cfg.profiles.setdefault(DEBIAN_PROFILE, builtin_debian_profile())
    return cfg

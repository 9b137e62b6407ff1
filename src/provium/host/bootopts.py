"""Boot options: validation, merging (creation opts < boot opts) and the VmSpec.

Both `VM(..., opts)` and `vm.boot(opts)` take every key; boot opts override
creation opts key by key, except `files` and `disks`, which append.  An unknown
key is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Profile
from ..image import hostbin
from ..image.errors import ImageError
from ..disk.spec import SHAPE, parse_disk
from ..vmm.base import BootFile, DiskSpec, ShareSpec, VmSpec
from .errors import ArgumentError
from .execargs import to_bytes
from .values import parse_duration, parse_size, type_name

BOOT_KEYS = ("memory", "cpus", "kernel_cmdline", "kernel_cmdline_append", "rng_seed", "initial_time",
             "files", "disks", "agent_boot_timeout", "shares")
# The reference's spelling of the agent timeout; accepted as an alias.
ALIASES = {"agent_timeout": "agent_boot_timeout"}


@dataclass
class BootOpts:
    memory: int | None = None
    cpus: int | None = None
    kernel_cmdline: str | None = None
    kernel_cmdline_append: str | None = None
    rng_seed: int | None = None
    initial_time: float | int | None = None
    files: list[BootFile] = field(default_factory=list)
    disks: list[DiskSpec] = field(default_factory=list)
    agent_boot_timeout: float | None = None
    shares: list[ShareSpec] = field(default_factory=list)

    def merged(self, over: "BootOpts") -> "BootOpts":
        out = BootOpts()
        for key in BOOT_KEYS:
            if key in ("files", "disks", "shares"):
                setattr(out, key, list(getattr(self, key)) + list(getattr(over, key)))
            else:
                v = getattr(over, key)
                setattr(out, key, getattr(self, key) if v is None else v)
        return out


def _check_path(p: Any, i: int) -> str:
    if not isinstance(p, str):
        raise ArgumentError(f"boot_opts.files[{i}]: `path` must be a string, got {type_name(p)}")
    parts = [c for c in p.split("/") if c]
    if any(c in (".", "..") for c in parts):
        raise ArgumentError(f"boot_opts.files: path `{p}` may not contain `.` or `..`")
    if not parts:
        raise ArgumentError(f"boot_opts.files: path `{p}` names no file")
    return "/" + "/".join(parts)


FILE_KEYS = ("path", "content", "host", "libs", "mode")
FILE_SHAPE = "{path=, content= or host=[, libs=, mode=]}"


def _files(value: Any) -> list[BootFile]:
    """`content` gives the bytes; `host` copies a host file instead (its mode by default),
    and `libs = true` adds the loader and shared libraries it links (image/hostbin.py)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(f"boot_opts.files: expected an array of {FILE_SHAPE} tables, got {type_name(value)}")
    out = []
    for i, f in enumerate(value, 1):
        if not isinstance(f, Mapping):
            raise ArgumentError(f"boot_opts.files[{i}]: expected a {FILE_SHAPE} table, got {type_name(f)}")
        extra = [k for k in f if k not in FILE_KEYS]
        if extra:
            raise ArgumentError(f"boot_opts.files[{i}]: unknown key `{extra[0]}` (valid: {', '.join(FILE_KEYS)})")
        if "path" not in f or ("content" in f) == ("host" in f):
            raise ArgumentError(f"boot_opts.files[{i}]: needs `path` and exactly one of `content` or `host`")
        path = _check_path(f["path"], i)
        libs = f.get("libs", False)
        if not isinstance(libs, bool):
            raise ArgumentError(f"boot_opts.files[{i}]: `libs` must be a boolean, got {type_name(libs)}")
        extra_files: list[BootFile] = []
        if "host" in f:
            host = f["host"]
            if not isinstance(host, str) or not host:
                raise ArgumentError(f"boot_opts.files[{i}]: `host` must be a host file path, got {type_name(host)}")
            where = f"boot_opts.files[{i}]"
            try:
                content, host_mode = hostbin.read_host_file(Path(host), where)
                if libs:
                    extra_files = [BootFile(path=p, content=c, mode=m)
                                   for p, c, m in hostbin.libraries(Path(host), where)]
            except ImageError as exc:
                raise ArgumentError(str(exc)) from exc
        else:
            if libs:
                raise ArgumentError(f"boot_opts.files[{i}]: `libs` needs `host` (the program whose libraries to copy)")
            content = to_bytes(f["content"], f"boot_opts.files[{i}]", "content")
            host_mode = 0o644
        mode = f.get("mode", host_mode)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ArgumentError(f"boot_opts.files: `mode` for `{f['path']}` must be an integer permission mask "
                                f"(e.g. 0x1ed for 0755), got {type_name(mode) if not isinstance(mode, int) else mode}")
        # Libraries first: an explicit entry for the same path, later in the list, wins.
        out.extend(extra_files)
        out.append(BootFile(path=path, content=content, mode=mode))
    return out


SHARE_KEYS = ("host", "guest", "readonly")
SHARE_SHAPE = "{host=, guest=[, readonly=]}"


def _shares(value: Any) -> list[ShareSpec]:
    """Host directories shared with virtiofs (vmm/qemu/virtiofs.py), mounted by provium at boot."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(f"boot_opts.shares: expected an array of {SHARE_SHAPE} tables, got {type_name(value)}")
    out = []
    for i, s in enumerate(value, 1):
        w = f"boot_opts.shares[{i}]"
        if not isinstance(s, Mapping):
            raise ArgumentError(f"{w}: expected a {SHARE_SHAPE} table, got {type_name(s)}")
        extra = [k for k in s if k not in SHARE_KEYS]
        if extra:
            raise ArgumentError(f"{w}: unknown key `{extra[0]}` (valid: {', '.join(SHARE_KEYS)})")
        host, guest, ro = s.get("host"), s.get("guest"), s.get("readonly", False)
        if not isinstance(host, str) or not host:
            raise ArgumentError(f"{w}: `host` must be a host directory path, got {type_name(host)}")
        if not isinstance(guest, str) or not guest.startswith("/"):
            raise ArgumentError(f"{w}: `guest` must be an absolute guest path, got {guest!r}")
        if any(c in ("", ".", "..") for c in guest.strip("/").split("/")) or guest.strip("/") == "" \
                or any(ch in guest for ch in " \t\n\"'\\"):
            raise ArgumentError(f"{w}: `guest` {guest!r} must be a plain absolute path below `/` "
                                "(no `.`, `..`, empty parts or whitespace/quotes)")
        if not isinstance(ro, bool):
            raise ArgumentError(f"{w}: `readonly` must be a boolean, got {type_name(ro)}")
        real = os.path.realpath(host)
        if not os.path.isdir(real):
            raise ArgumentError(f"{w}: host directory `{host}` does not exist or is not a directory")
        out.append(ShareSpec(host=real, guest="/" + guest.strip("/"), readonly=ro))
    return out


def _disks(value: Any, start: int) -> list[DiskSpec]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(f"boot_opts.disks: expected an array of {SHAPE} tables, got {type_name(value)}")
    return [parse_disk(d, f"boot_opts.disks[{i + 1}]", f"boot{start + i}", ArgumentError)
            for i, d in enumerate(value)]


def parse_boot_opts(opts: Mapping | None, where: str, *, disk_index: int = 0) -> BootOpts:
    """`where` names the call (e.g. "vm `a`: boot") for errors; `disk_index` numbers
    default disk ids after the ones already staged."""
    out = BootOpts()
    if opts is None:
        return out
    if not isinstance(opts, Mapping):
        raise ArgumentError(f"{where}: boot options must be a table/dict, got {type_name(opts)}")
    for raw_key, value in opts.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in BOOT_KEYS:
            raise ArgumentError(f"{where}: unknown boot option `{raw_key}` (valid: {', '.join(BOOT_KEYS)})")
        if value is None:
            continue
        if key == "memory":
            out.memory = parse_size(value, "boot_opts.memory")
            if out.memory < 1 << 20:
                raise ArgumentError(f"boot_opts.memory: {out.memory} bytes is too small (at least 1M)")
        elif key == "cpus":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
                raise ArgumentError(f"boot_opts.cpus: expected an integer 1..255, got {value!r}")
            out.cpus = value
        elif key in ("kernel_cmdline", "kernel_cmdline_append"):
            if not isinstance(value, str):
                raise ArgumentError(f"boot_opts.{key}: expected a string, got {type_name(value)}")
            setattr(out, key, value)
        elif key == "rng_seed":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise ArgumentError(f"boot_opts.rng_seed: expected an integer 0..2^64-1, got {value!r}")
            out.rng_seed = value
        elif key == "initial_time":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArgumentError("boot_opts.initial_time: expected number (seconds since epoch), "
                                    f"got {type_name(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ArgumentError("boot_opts.initial_time: NaN/inf not allowed")
            out.initial_time = value
        elif key == "files":
            out.files = _files(value)
        elif key == "disks":
            out.disks = _disks(value, disk_index)
        elif key == "shares":
            out.shares = _shares(value)
        elif key == "agent_boot_timeout":
            secs = parse_duration(value, f"boot_opts.{raw_key}")
            if secs <= 0:
                raise ArgumentError(f"boot_opts.{raw_key}: expected a positive number of seconds, got {value!r}")
            out.agent_boot_timeout = secs
    return out


def make_spec(name: str, profile: Profile, opts: BootOpts, *, default_memory: int, default_cpus: int) -> VmSpec:
    return VmSpec(
        name=name,
        profile=profile,
        memory_bytes=opts.memory or profile.memory or default_memory,
        cpus=opts.cpus or profile.cpus or default_cpus,
        kernel_cmdline=opts.kernel_cmdline,
        kernel_cmdline_append=opts.kernel_cmdline_append or "",
        rng_seed=opts.rng_seed,
        initial_time=None if opts.initial_time is None else int(opts.initial_time),
        files=list(opts.files),
        disks=list(opts.disks),
        agent_boot_timeout=opts.agent_boot_timeout or profile.agent_boot_timeout,
        shares=[dataclasses.replace(s, tag=f"provium{i}") for i, s in enumerate(opts.shares)],
    )

"""Reading one disk declaration (a Lua table, a TOML table, a dict) into a `DiskSpec`.

One parser for the profile's `disks` (provium.toml), the boot option `disks` and
`vm:attach_disk`, so the three agree on keys, defaults and messages.  The caller
passes the error class to raise (`ConfigError` for the config file, `ArgumentError`
for calls), because this module sits below both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..typenames import type_name as _type
from ..vmm.base import DiskSpec

KEYS = ("id", "path", "scratch", "template", "readonly", "mediated")
SOURCES = ("path", "scratch", "template")
SHAPE = "{id=, path= | scratch= | template=[, readonly=][, mediated=]}"
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
MAX_SCRATCH = 1 << 50  # 1 PiB: a sparse file of that size is still legal; more is a typo


def parse_size(value: Any, what: str, error: type[Exception]) -> int:
    """Bytes from an integer or "<digits>[K|M|G|T]" (1024-based); the bad text is quoted."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise error(f"{what}: expected bytes as an integer or a size string like \"64M\", got {_type(value)}")
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise error(f"{what}: cannot parse size `{value}` (expected an integer number of bytes, "
                        "or digits with a K/M/G/T suffix like \"64M\")")
        value = int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))
    if value <= 0 or value > MAX_SCRATCH:
        raise error(f"{what}: size must be 1 byte .. 1 PiB, got {value}")
    return value


def parse_disk(d: Any, where: str, default_id: str, error: type[Exception]) -> DiskSpec:
    """`where` names the table in messages (e.g. "boot_opts.disks[2]")."""
    if not isinstance(d, Mapping):
        raise error(f"{where}: expected a {SHAPE} table, got {_type(d)}")
    extra = sorted(str(k) for k in d if k not in KEYS)
    if extra:
        raise error(f"{where}: unknown key `{extra[0]}` (valid: {', '.join(KEYS)})")
    did = d.get("id", default_id)
    if did is None:
        did = default_id
    if not isinstance(did, str) or not did:
        raise error(f"{where}: `id` must be a non-empty string, got {_type(did)}")
    given = [k for k in SOURCES if d.get(k) is not None]
    if len(given) != 1:
        got = " and ".join(f"`{k}`" for k in given) if given else "none"
        raise error(f"{where}: disk `{did}` needs exactly one source of path, scratch or template (got {got})")
    for flag in ("readonly", "mediated"):
        v = d.get(flag, False)
        if v is not None and not isinstance(v, bool):
            raise error(f"{where}: `{flag}` must be a boolean, got {_type(v)}")
    readonly = bool(d.get("readonly") or False)
    mediated = bool(d.get("mediated") or False)
    src = given[0]
    if src == "scratch":
        return DiskSpec(id=did, scratch=parse_size(d["scratch"], f"{where}: disk `{did}`: scratch", error),
                        readonly=readonly, mediated=mediated)
    value = d[src]
    if not isinstance(value, str):
        raise error(f"{where}: `{src}` must be a string, got {_type(value)}")
    if not value:
        raise error(f"{where.split('[')[0]}: `{src}` must not be empty")
    if "\0" in value:
        raise error(f"{where}: `{src}` contains a NUL byte")
    if src == "path":
        return DiskSpec(id=did, path=value, readonly=readonly, mediated=mediated)
    return DiskSpec(id=did, template=value, readonly=readonly, mediated=mediated)

"""Run-wide settings handed from the CLI to each runner subprocess.

The CLI builds one `RunSettings` from its flags and writes it as JSON; the
runner (`python -m provium.runner --settings FILE ...`) reads it back.  Only
plain JSON types live here so the round trip is lossless.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError

DEFAULT_TEST_TIMEOUT = 300.0  # seconds; per test, when neither meta nor the file sets one
DEFAULT_FILE_TIMEOUT = 300.0  # seconds; the whole file (CLI `--timeout`, 0 disables)


class SettingsError(ConfigError, ValueError):
    """The settings JSON is malformed or names an unknown key."""


@dataclass
class RunSettings:
    vmm: str = "qemu"  # "qemu" | "local"
    accel: str | None = None  # "auto" | "kvm" | "tcg"; None = each profile's own
    config_path: str | None = None  # provium.toml; None = defaults + built-in profile
    include_slow: bool = False
    tags: list[str] = field(default_factory=list)  # --tag (OR)
    no_tags: list[str] = field(default_factory=list)  # --no-tag
    tag_meta: dict[str, list[str]] = field(default_factory=dict)  # --tag-meta KEY=VALUE
    no_tag_meta: dict[str, list[str]] = field(default_factory=dict)  # --no-tag-meta KEY=VALUE
    # --filter: a substring of the file path (cli.md).  The CLI applies it when it
    # discovers files; carried here for reporting only, the runner does not use it.
    filter: str | None = None
    test_timeout: float | None = DEFAULT_TEST_TIMEOUT  # None/0 = no per-test default
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT  # None/0 = no per-file watchdog
    vm_memory: int | None = None  # bytes for a VM that declares none (default 512 MiB)
    vm_cpus: int | None = None  # vCPUs for a VM that declares none (default 1)
    pool_memory: int | None = None  # --mem: the run's memory budget in bytes
    pool_cpus: int | None = None  # --cpus: the run's vCPU budget
    fail_fast: bool = False
    verbose: bool = False
    vmm_options: dict[str, Any] = field(default_factory=dict)  # extra kwargs for vmm.create
    coordinator: str | None = None  # the dispatcher's unix socket (pool, claims, barriers); None = no pool

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "RunSettings":
        if not isinstance(data, dict):
            raise SettingsError(f"run settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"run settings: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(known))})"
            )
        s = cls(**data)
        s.tag_meta = {str(k): [str(x) for x in v] for k, v in (s.tag_meta or {}).items()}
        s.no_tag_meta = {str(k): [str(x) for x in v] for k, v in (s.no_tag_meta or {}).items()}
        return s

    @classmethod
    def from_json(cls, text: str) -> "RunSettings":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"run settings are not valid JSON: {exc}") from exc
        return cls.from_dict(data)

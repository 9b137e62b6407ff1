"""Opening a Session the way the CLI does, for Python users (`Session.open`).

The CLI turns `--vmm`, `--config` and `--accel` into a backend and a `Config`
(`cli/run.py`, `runner/file_runner.py`); a Python user or the pytest plugin
should get exactly the same objects from the same three settings, so this
module reuses the runner's own `make_vmm` and the CLI's config search instead
of a second copy of either.

It also owns the optional event recorder: a `FileSink` writing the msgpack
event stream a CLI run writes with `--save-events`, fed by the session's
`emit` hook (VM lifecycle) and by whoever runs the tests (the pytest plugin
sends test_started/passed/failed/skipped).  The recorder is closed with the
session.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError

if TYPE_CHECKING:
    from ..config import Config
    from ..events.sinks import Sink
    from ..vmm.base import Vmm
    from .session import Session

ACCELS = ("auto", "kvm", "tcg")


class EventRecorder:
    """Writes a session's events to a sink; `path` names the test file in them.

    The session's hook passes `(kind, **payload)`; events whose type has a
    `file` (or `path`) field get the current `path` filled in, as the runner
    does for a Lua file.  Writing never fails the caller: a broken sink is
    reported once on stderr by the sink itself.
    """

    def __init__(self, sink: Sink, path: str = "") -> None:
        self.sink = sink
        self.path = path
        self._lock = threading.Lock()

    def emit(self, event: Any) -> None:
        with self._lock:
            try:
                self.sink.emit(event)
            except Exception:  # noqa: BLE001 - events never fail a test
                pass

    def hook(self, kind: str, **payload: Any) -> None:
        from ..events import types as ev

        cls = ev.EVENT_TYPES.get(kind)
        if cls is None:
            return
        fields = getattr(cls, "__dataclass_fields__", {})
        for key in ("file", "path"):
            if key in fields and key not in payload:
                payload[key] = self.path
        try:
            event = cls(**payload)
        except TypeError:
            return
        self.emit(event)

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001
            pass


def load_config(config: str | os.PathLike | Config | None) -> Config:
    """A `Config` as the CLI finds it: an explicit path must exist; without one,
    the nearest `provium.toml` (current directory upwards), else the defaults
    with the built-in `linux` profile."""
    from .. import config as configmod

    if isinstance(config, configmod.Config):
        return config
    if config is not None:
        if not isinstance(config, (str, os.PathLike)):
            raise ArgumentError(f"Session.open: `config` must be a path or a Config, got {type(config).__name__}")
        return configmod.load(config, explicit=True)
    found = configmod.find_config()
    return configmod.load(found) if found is not None else configmod.load(None)


def make_vmm(vmm: str | Vmm, accel: str | None) -> Vmm:
    """The backend for `vmm` ("qemu" or "local", or an already built `Vmm`)."""
    from .. import vmm as vmm_mod

    if accel is not None and accel not in ACCELS:
        raise ArgumentError(f"Session.open: unknown `accel` {accel!r} (valid: {', '.join(ACCELS)})")
    if not isinstance(vmm, str):
        if not isinstance(vmm, vmm_mod.Vmm):
            raise ArgumentError(f"Session.open: `vmm` must be a backend name ({', '.join(vmm_mod.BACKENDS)}) "
                                f"or a Vmm, got {type(vmm).__name__}")
        if accel is not None:
            raise ArgumentError("Session.open: `accel` applies to a backend made by name; "
                                "pass it to the Vmm you built instead")
        return vmm
    if vmm not in vmm_mod.BACKENDS:
        raise ArgumentError(f"Session.open: unknown `vmm` {vmm!r} (valid: {', '.join(vmm_mod.BACKENDS)})")
    # The same rule as the runner's `make_vmm` (accel goes to QEMU only); not
    # imported from there because that module loads the Lua runtime.
    return vmm_mod.create(vmm, **({"accel": accel} if vmm == "qemu" and accel else {}))


def prepare_host(cfg: Config, accel: str | None) -> None:
    """What the CLI does before real guests boot (`cli/run.py`): the host checks
    (a clear error naming what is missing instead of a failed boot later), then
    each dynamic profile's `build` command.  `--vmm local` needs neither."""
    from .. import image, preflight

    preflight.run(cfg, vmm="qemu", accel=accel)
    for name in sorted(n for n, p in cfg.profiles.items() if p.build):
        image.run_build(cfg.profiles[name])


def open_session(vmm: str | Vmm = "qemu", *, config: str | os.PathLike | Config | None = None,
                 accel: str | None = None, events: str | os.PathLike | Sink | None = None,
                 default_memory: int = 512 << 20,
                 default_cpus: int = 1, prepare: bool = True) -> Session:
    """See `Session.open`."""
    from .session import Session

    cfg = load_config(config)
    if prepare and vmm == "qemu":
        prepare_host(cfg, accel)
    backend = make_vmm(vmm, accel)
    recorder: EventRecorder | None = None
    if events is not None:
        from ..events.sinks import FileSink, Sink

        if isinstance(events, Sink):
            sink: Sink = events
        elif isinstance(events, (str, os.PathLike)):
            sink = FileSink(Path(events), truncate=True)
        else:
            raise ArgumentError(f"Session.open: `events` must be a path or a Sink, got {type(events).__name__}")
        recorder = EventRecorder(sink)
    session = Session(backend, cfg, emit=recorder.hook if recorder is not None else None,
                      default_memory=default_memory, default_cpus=default_cpus)
    session.event_recorder = recorder
    return session

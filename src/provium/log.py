"""Provium's logging: one `provium` logger hierarchy, one child per VM.

* `provium.vm.<name>` — one per VM: DEBUG for every agent op (kind, time taken),
  INFO with the elapsed time for boot, reset, pause/resume, snapshot, restore and
  shutdown.
* `provium.lab.<name>` — one per lab: INFO with the elapsed time for a lab's
  snapshot and restore (its VMs' own steps are logged by each VM's logger).
* `provium.<module>` — everything else (the runner, the scheduler, ...).
* `qemu.qmp.protocol.<vm>` — the QMP library's own log of one VM goes to that
  VM's `qmp.log` in its scratch directory (see `vmm/qemu/qmp.py`), not to the
  terminal.

Nothing is printed unless a level is chosen: `provium --log-level debug` or
`PROVIUM_LOG=info` (the CLI sets the variable, so runner subprocesses inherit
it).  Only the `provium` logger gets a handler; no other library's logging is
touched, so a Python user's own configuration (or pytest's `caplog`) sees the
same records.  The event stream stays the machine-readable record.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PROVIUM_LOG"
LEVELS = ("debug", "info", "warning", "error")
ROOT = logging.getLogger("provium")
_FORMAT = "%(asctime)s.%(msecs)03d %(name)s %(levelname)s: %(message)s"
_handler: logging.Handler | None = None


def vm_logger(name: str) -> logging.Logger:
    """The logger of the VM called `name`."""
    return ROOT.getChild(f"vm.{name}")


def lab_logger(name: str) -> logging.Logger:
    """The logger of the lab called `name`."""
    return ROOT.getChild(f"lab.{name}")


def parse_level(text: str, what: str = ENV) -> int:
    from .errors import ArgumentError

    name = text.strip().lower()
    if name not in LEVELS:
        raise ArgumentError(f"{what}: unknown log level `{text}` (valid: {', '.join(LEVELS)})")
    return getattr(logging, name.upper())


def configure(level: str | None = None) -> None:
    """Send `provium` records at `level` (else $PROVIUM_LOG; else nothing) to stderr."""
    global _handler
    text = level if level is not None else os.environ.get(ENV, "")
    if not text:
        return
    lvl = parse_level(text, "--log-level" if level is not None else ENV)
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        ROOT.addHandler(_handler)
    ROOT.setLevel(lvl)


@contextmanager
def timed(logger: logging.Logger, what: str) -> Iterator[None]:
    """Log `what` at INFO with the time it took ("boot (finished in 3.21 s)"), or that it failed."""
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        logger.info("%s failed after %.2f s: %s", what, time.monotonic() - started, exc)
        raise
    logger.info("%s (finished in %.2f s)", what, time.monotonic() - started)

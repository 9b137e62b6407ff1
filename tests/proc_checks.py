"""Helpers the test directories share (tests/conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int, within: float = 10.0) -> bool:
    """True once `pid` has exited (gone, or a zombie nobody reaped yet) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "(zombie)" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False

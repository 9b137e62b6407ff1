"""Helpers shared by the real-QEMU tests."""

import os
import shutil

import psutil
import pytest

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 is not installed (make sysdeps)")


def qemu_processes(parent_pid: int | None = None) -> list[psutil.Process]:
    """Live QEMU processes descended from `parent_pid` (default: this process)."""
    out = []
    try:
        kids = psutil.Process(parent_pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in kids:
        try:
            if p.name().startswith("qemu-system") and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out

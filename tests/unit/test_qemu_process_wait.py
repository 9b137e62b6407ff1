"""vmm/qemu/process.wait_exit: wakes when the process exits (a pidfd), or gives up at the timeout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from provium.vmm.qemu import process


def test_wait_exit_returns_at_exit_and_none_at_timeout():
    async def main():
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
        assert await process.wait_exit(p, 0.05) is None  # still running
        started = time.monotonic()
        assert await process.wait_exit(p, 10) == 0
        assert time.monotonic() - started < 5
        assert await process.wait_exit(p, 0) == 0  # already reaped: the code again

    asyncio.run(main())


def test_kill_reaps_the_process_group():
    async def main():
        p = subprocess.Popen(["sleep", "30"], process_group=0)
        await process.kill(p)
        assert p.returncode == -9

    asyncio.run(main())

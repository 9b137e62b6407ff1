"""protocol/mux.py: a large frame goes to the transport in slices, never half."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from provium.protocol import mux


class _Writer:
    """Records what was written; drain() waits until the test lets it go."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.drains = 0
        self.gate = asyncio.Event()

    def write(self, data) -> None:
        self.written.append(bytes(data))

    async def drain(self) -> None:
        self.drains += 1
        await self.gate.wait()


def test_a_large_part_is_written_in_slices_in_order():
    async def main() -> None:
        w = _Writer()
        w.gate.set()
        big = os.urandom(3 * mux._SEND_SLICE + 7)
        await mux.MuxClient._write_parts(SimpleNamespace(_writer=w), [b"head", memoryview(big), b"tail"])  # type: ignore[arg-type]
        assert b"".join(w.written) == b"head" + big + b"tail"
        assert max(len(p) for p in w.written) == mux._SEND_SLICE
        assert w.drains == 3  # after each full slice, so the transport never holds the whole body

    asyncio.run(main())


def test_a_cancel_between_slices_still_writes_the_whole_frame():
    async def main() -> None:
        w = _Writer()  # drain() never returns: the send is cancelled while waiting in it
        big = os.urandom(4 * mux._SEND_SLICE)
        task = asyncio.ensure_future(mux.MuxClient._write_parts(SimpleNamespace(_writer=w), [b"head", big, b"tail"]))  # type: ignore[arg-type]
        while w.drains < 1:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b"".join(w.written) == b"head" + big + b"tail"  # the stream stays in step

    asyncio.run(main())

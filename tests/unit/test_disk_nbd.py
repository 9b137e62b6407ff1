"""provium's NBD server: against QEMU's own client (qemu-io), the write-back store, and
fuzzed peers that must never crash it."""

from __future__ import annotations

import asyncio
import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provium.disk import nbd
from provium.disk.faults import Fault, Faults
from provium.disk.nbd import NbdServer
from provium.disk.store import BlockStore

SIZE = 1 << 20


def _image(tmp_path, name="d.img"):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(SIZE)
    return str(p)


async def _server(tmp_path, faults=None, readonly=False):
    store = BlockStore(_image(tmp_path), readonly=readonly)
    srv = NbdServer(str(tmp_path / "s.nbd"), "data", store, faults or Faults())
    await srv.start()
    return srv


async def _qemu_io(srv, *cmds):
    args = ["qemu-io", "-f", "raw", f"nbd+unix:///data?socket={srv.socket_path}"]
    for c in cmds:
        args += ["-c", c]
    p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await p.communicate()
    return p.returncode, out.decode()


needs_qemu_io = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io not installed (qemu-utils)")


@needs_qemu_io
def test_qemu_io_write_flush_read(tmp_path):
    async def main():
        srv = await _server(tmp_path)
        try:
            rc, out = await _qemu_io(srv, "write -P 0xab 0 64k", "flush", "write -f -P 0xef 131072 4k",
                                     "read -P 0xab 0 64k", "read -P 0xef 131072 4k", "discard 0 4096",
                                     "read -P 0 0 4096")
            assert rc == 0 and "verification failed" not in out, out
            assert srv.stats.flushes >= 1 and srv.stats.writes == 2 and srv.stats.trims == 1
            assert srv.store.read(4096, 4) == b"\xab" * 4
        finally:
            await srv.close()
    asyncio.run(main())


def test_power_cut_drops_only_unflushed_writes(tmp_path):
    async def main():
        srv = await _server(tmp_path)
        reader, writer = await asyncio.open_unix_connection(srv.socket_path)
        try:
            await reader.readexactly(18)
            writer.write(_client_handshake())
            assert await _read_go_replies(reader)
            req = struct.Struct(">IHHQQI")
            writer.write(req.pack(nbd.REQUEST_MAGIC, 0, nbd.CMD_WRITE, 1, 0, 512) + b"F" * 512)
            writer.write(req.pack(nbd.REQUEST_MAGIC, 0, nbd.CMD_FLUSH, 2, 0, 0))
            writer.write(req.pack(nbd.REQUEST_MAGIC, 0, nbd.CMD_WRITE, 3, 4096, 512) + b"U" * 512)
            writer.write(req.pack(nbd.REQUEST_MAGIC, nbd.CMD_FLAG_FUA, nbd.CMD_WRITE, 4, 8192, 512) + b"A" * 512)
            await writer.drain()
            for h in (1, 2, 3, 4):
                assert struct.unpack(">IIQ", await reader.readexactly(16)) == (nbd.SIMPLE_REPLY_MAGIC, 0, h)
            store = srv.store
            assert store.dirty_sectors() == 1 and store.read(4096, 1) == b"U"
            assert store.power_cut() == 1
            assert (store.read(0, 1), store.read(4096, 1), store.read(8192, 1)) == (b"F", b"\0", b"A")
        finally:
            writer.close()
            await srv.close()
    asyncio.run(main())


@needs_qemu_io
def test_qemu_io_sees_faults_and_read_only(tmp_path):
    async def main():
        faults = Faults()
        srv = await _server(tmp_path, faults)
        try:
            faults.inject(Fault("eio_read", start=8, count=8))
            rc, out = await _qemu_io(srv, "read 0 4096", "read 4096 4096")
            assert "read failed: Input/output error" in out and out.count("read 4096/4096") == 1, out
            faults.clear()
            faults.inject(Fault("eio_write", after=1))
            rc, out = await _qemu_io(srv, "write 0 512", "write 0 512")
            assert out.count("wrote 512/512") == 1 and "write failed: Input/output error" in out, out
        finally:
            await srv.close()
    asyncio.run(main())


def test_store_partial_sectors_and_host_writes(tmp_path):
    s = BlockStore(_image(tmp_path))
    s.write(510, b"abcd")                  # straddles sectors 0 and 1
    assert s.dirty_sectors() == 2 and s.read(508, 8) == b"\0\0abcd\0\0"
    s.host_write(511, b"X")                # durable, and the cached sector agrees
    assert s.read(510, 4) == b"aXcd"
    s.power_cut()
    assert s.read(510, 4) == b"\0X\0\0"   # only the host's byte survived
    s.write(0, b"z" * 1024)
    s.flush()
    s.power_cut()
    assert s.read(0, 1024) == b"z" * 1024 and s.flushes == 1
    assert s.read(SIZE - 2, 10) == b"\0\0"  # short at the end
    s.close()


# ---- fuzz --------------------------------------------------------------------------

def _client_handshake(name=b"data"):
    opt = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    return (struct.pack(">I", nbd.C_FIXED_NEWSTYLE | nbd.C_NO_ZEROES)
            + struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_GO, len(opt)) + opt)


async def _read_go_replies(reader):
    """Option replies up to the ACK of GO; True if GO succeeded."""
    while True:
        magic, _opt, rep, length = struct.unpack(">QIII", await reader.readexactly(20))
        assert magic == nbd.REPLY_MAGIC
        await reader.readexactly(length)
        if rep == nbd.REP_ACK:
            return True
        if rep & 0x80000000:
            return False


async def _good_client(path):
    """A correct client: handshake, write, read back."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        await reader.readexactly(18)
        writer.write(_client_handshake())
        assert await _read_go_replies(reader)
        writer.write(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, nbd.CMD_WRITE, 7, 4096, 4) + b"okay")
        writer.write(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, nbd.CMD_READ, 8, 4096, 4))
        await writer.drain()
        assert struct.unpack(">IIQ", await reader.readexactly(16)) == (nbd.SIMPLE_REPLY_MAGIC, 0, 7)
        assert struct.unpack(">IIQ", await reader.readexactly(16)) == (nbd.SIMPLE_REPLY_MAGIC, 0, 8)
        assert await reader.readexactly(4) == b"okay"
    finally:
        writer.close()


requests = st.builds(
    lambda magic, flags, cmd, off, length, payload: struct.pack(
        ">IHHQQI", magic, flags, cmd, 1, off, length) + payload,
    st.sampled_from([nbd.REQUEST_MAGIC]) | st.integers(0, 2**32 - 1),
    st.integers(0, 3) | st.integers(0, 2**16 - 1),
    st.integers(0, 8) | st.integers(0, 2**16 - 1),
    st.integers(0, SIZE + 4096) | st.integers(0, 2**64 - 1),
    st.integers(0, 8192) | st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
)
fuzz_input = st.one_of(
    st.binary(max_size=200).map(lambda b: (False, b)),                                # garbage handshake
    st.lists(st.binary(max_size=40), max_size=4).map(lambda bs: (False, _client_handshake()[:4] + b"".join(bs))),
    st.lists(requests, min_size=1, max_size=5).map(lambda rs: (True, b"".join(rs))),   # after a good GO
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fuzz_input)
def test_fuzzed_peer_never_crashes_the_server(tmp_path, case):
    after_go, data = case

    async def main():
        srv = await _server(tmp_path)
        try:
            reader, writer = await asyncio.open_unix_connection(srv.socket_path)
            await reader.readexactly(18)
            if after_go:
                writer.write(_client_handshake())
                assert await _read_go_replies(reader)
            writer.write(data)
            await writer.drain()
            # read whatever comes back until the server closes or goes quiet
            try:
                while await asyncio.wait_for(reader.read(65536), 0.05):
                    pass
            except (asyncio.TimeoutError, ConnectionError):
                pass
            writer.close()
            await _good_client(srv.socket_path)  # still serving
        finally:
            await srv.close()
        assert not srv._conns
    asyncio.run(main())
    import os
    for f in os.listdir(tmp_path):
        os.unlink(tmp_path / f)


def test_power_cut_restores_holes_and_data(tmp_path):
    s = BlockStore(_image(tmp_path))
    s.host_write(4096, b"D" * 4096)        # data; the rest of the file is a hole
    s.write(0, b"x" * 8192)                # over a hole and over data
    s.write(SIZE - 512, b"e" * 512)        # the last sector
    assert s.dirty_sectors() == 17
    s.power_cut()
    assert s.read(0, 8192) == bytes(4096) + b"D" * 4096
    assert s.read(SIZE - 512, 512) == bytes(512) and s.size() == SIZE
    s.close()

"""An asyncio NBD server: one export (one disk image) on a unix socket, for QEMU.

What QEMU's NBD client needs, and nothing more (protocol: the NBD project's
`proto.md`):
- the fixed newstyle handshake with NBD_OPT_GO / INFO / EXPORT_NAME / LIST / ABORT;
  structured replies, meta contexts, extended headers and TLS are refused, so the
  client uses 28-byte requests and 16-byte simple replies;
- READ, WRITE (with FUA), FLUSH, TRIM and DISC.

Every request passes the disk's `Faults` (EIO, slow) and goes to its `BlockStore`
(the image plus a write-back overlay a power cut drops), so the guest's kernel sees
the same faults and bytes as the test's own sector I/O.

Nothing the peer sends is trusted: a bad magic, an impossible length or a write
payload larger than the advertised maximum closes that connection; a request that is
merely wrong (out of range, unknown command, bad flags, read-only) gets an error reply.
A connection's failure never reaches the server or the runner: each is logged and
closed.  Requests are served one at a time in arrival order (QEMU pipelines them;
answering in order is allowed and keeps the overlay lock-free).

Owner: the `NbdServer` owns its listening socket and one task per connection;
`close()` stops them all and removes the socket file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as E
import logging
import os
import socket
import struct
from dataclasses import dataclass, field

from ..errors import ProtocolError
from .faults import Faults
from .store import BlockStore

log = logging.getLogger("provium.disk.nbd")

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
C_FIXED_NEWSTYLE, C_NO_ZEROES = 1, 2

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = 2**31 + 1
REP_ERR_INVALID = 2**31 + 3
REP_ERR_UNKNOWN = 2**31 + 6
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3

TF_HAS_FLAGS, TF_READ_ONLY, TF_SEND_FLUSH, TF_SEND_FUA, TF_SEND_TRIM = 1, 2, 4, 8, 32
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_FLAG_FUA = 1
KNOWN_CMD_FLAGS = CMD_FLAG_FUA

MAX_PAYLOAD = 32 << 20  # advertised maximum request size
MAX_OPTION = 4096  # an option's data; ours are names of a few bytes
MAX_OPTIONS = 64  # options per handshake before we give up on the peer
PREFERRED_BLOCK = 4096
STREAM_LIMIT = 4 << 20
SOCKET_BUFFER = 4 << 20

_REQ = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")


class ProtocolViolation(ProtocolError):
    """The peer broke the protocol in a way that leaves no safe reply: close it."""


@dataclass
class Stats:
    reads: int = 0
    writes: int = 0
    flushes: int = 0
    trims: int = 0
    errors: int = 0
    connections: int = 0
    closed_for_violation: int = 0
    by_error: dict = field(default_factory=dict)


class NbdServer:
    def __init__(self, socket_path: str, export: str, store: BlockStore, faults: Faults) -> None:
        self.socket_path = socket_path
        self.export = export.encode()
        self.store = store
        self.faults = faults
        self.stats = Stats()
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Task | None = None
        self._conns: set[asyncio.Task] = set()

    async def start(self) -> None:
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        # A reader limit above the largest request, so a 1 MiB write is not read in 64 KiB
        # steps with the transport paused and resumed in between.
        self._server = await asyncio.start_unix_server(self._accept, path=self.socket_path, limit=STREAM_LIMIT)
        os.chmod(self.socket_path, 0o600)

    def listen_now(self) -> None:
        """Bind and listen at once, from synchronous code on the loop thread (a snapshot
        restore hook): a client that connects before the accept loop runs waits in the
        backlog.  The accept loop starts at the loop's next turn; `close()` waits for it."""
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.socket_path)
            os.chmod(self.socket_path, 0o600)
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        self._starting = asyncio.get_running_loop().create_task(self._serve_on(sock))

    async def _serve_on(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=STREAM_LIMIT)

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    @property
    def connected(self) -> int:
        return len(self._conns)

    # ---- one connection --------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Socket buffers that hold a whole request or reply: fewer round trips between
            # QEMU's event loop and ours per request (measured: see bench/disk.py).
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        self._conns.add(task)
        self.stats.connections += 1
        try:
            if await self._handshake(reader, writer):
                await self._transmission(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away
        except ProtocolViolation as exc:
            self.stats.closed_for_violation += 1
            log.warning("nbd %s: closing a connection: %s", self.socket_path, exc)
        except asyncio.CancelledError:
            # close() cancelled us and awaits us.  Not re-raised: asyncio's own done
            # callback for connection tasks (3.11) would log the cancellation as an error.
            pass
        except Exception:  # a bug of ours: log it, drop the connection, keep serving
            log.exception("nbd %s: connection failed", self.socket_path)
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """True once the client is in transmission; False if it aborted."""
        writer.write(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        await writer.drain()
        (cflags,) = struct.unpack(">I", await reader.readexactly(4))
        if cflags & ~(C_FIXED_NEWSTYLE | C_NO_ZEROES):
            raise ProtocolViolation(f"unknown client flags {cflags:#x}")
        no_zeroes = bool(cflags & C_NO_ZEROES)
        for _ in range(MAX_OPTIONS):
            magic, opt, length = struct.unpack(">QII", await reader.readexactly(16))
            if magic != IHAVEOPT:
                raise ProtocolViolation(f"bad option magic {magic:#x}")
            if length > MAX_OPTION:
                raise ProtocolViolation(f"option {opt} with {length} bytes of data")
            data = await reader.readexactly(length)
            if opt == OPT_EXPORT_NAME:
                if data not in (self.export, b""):
                    raise ProtocolViolation(f"unknown export {data[:64]!r}")
                writer.write(struct.pack(">QH", self._size(), self._tflags()) + (b"" if no_zeroes else bytes(124)))
                await writer.drain()
                return True
            if opt == OPT_ABORT:
                await self._opt_reply(writer, opt, REP_ACK)
                return False
            if opt == OPT_LIST:
                if data:
                    await self._opt_reply(writer, opt, REP_ERR_INVALID)
                    continue
                await self._opt_reply(writer, opt, REP_SERVER, struct.pack(">I", len(self.export)) + self.export)
                await self._opt_reply(writer, opt, REP_ACK)
                continue
            if opt in (OPT_INFO, OPT_GO):
                if await self._info(writer, opt, data) and opt == OPT_GO:
                    return True
                continue
            await self._opt_reply(writer, opt, REP_ERR_UNSUP)
        raise ProtocolViolation(f"more than {MAX_OPTIONS} options in one handshake")

    async def _info(self, writer: asyncio.StreamWriter, opt: int, data: bytes) -> bool:
        if len(data) < 6:
            await self._opt_reply(writer, opt, REP_ERR_INVALID)
            return False
        (nlen,) = struct.unpack_from(">I", data)
        if 4 + nlen + 2 > len(data):
            await self._opt_reply(writer, opt, REP_ERR_INVALID)
            return False
        name = data[4:4 + nlen]
        (nreq,) = struct.unpack_from(">H", data, 4 + nlen)
        if len(data) != 4 + nlen + 2 + 2 * nreq:
            await self._opt_reply(writer, opt, REP_ERR_INVALID)
            return False
        if name not in (self.export, b""):
            await self._opt_reply(writer, opt, REP_ERR_UNKNOWN, b"no such export")
            return False
        size = self._size()
        await self._opt_reply(writer, opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, self._tflags()))
        # Always sent with GO (a client that did not ask may ignore it): it tells QEMU to
        # align requests to whole sectors, which is what the overlay caches.
        minimum = 512 if size % 512 == 0 else 1
        await self._opt_reply(writer, opt, REP_INFO,
                              struct.pack(">HIII", INFO_BLOCK_SIZE, minimum, PREFERRED_BLOCK, MAX_PAYLOAD))
        await self._opt_reply(writer, opt, REP_ACK)
        return True

    async def _opt_reply(self, writer: asyncio.StreamWriter, opt: int, rep: int, data: bytes = b"") -> None:
        writer.write(struct.pack(">QIII", REPLY_MAGIC, opt, rep, len(data)) + data)
        await writer.drain()

    def _size(self) -> int:
        return self.store.size()

    def _tflags(self) -> int:
        f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM
        return f | TF_READ_ONLY if self.store.readonly else f

    async def _transmission(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = self._size()  # fixed for the connection, as advertised
        while True:
            magic, flags, cmd, handle, offset, length = _REQ.unpack(await reader.readexactly(_REQ.size))
            if magic != REQUEST_MAGIC:
                raise ProtocolViolation(f"bad request magic {magic:#x}")
            payload = b""
            if cmd == CMD_WRITE:
                if length > MAX_PAYLOAD:
                    raise ProtocolViolation(f"write of {length} bytes (maximum {MAX_PAYLOAD})")
                payload = await reader.readexactly(length)
            if cmd == CMD_DISC:
                return
            err, data = await self._serve(cmd, flags, offset, length, payload, size)
            if err:
                self.stats.errors += 1
                self.stats.by_error[err] = self.stats.by_error.get(err, 0) + 1
            writer.write(_REPLY.pack(SIMPLE_REPLY_MAGIC, err, handle))
            if data:
                writer.write(data)  # not concatenated: a read reply can be 32 MiB
            await writer.drain()

    async def _serve(self, cmd: int, flags: int, offset: int, length: int, payload: bytes,
                     size: int) -> tuple[int, bytes]:
        """(error number, data) for one request."""
        if flags & ~KNOWN_CMD_FLAGS:
            return E.EINVAL, b""
        if cmd == CMD_READ:
            kind = "read"
        elif cmd in (CMD_WRITE, CMD_TRIM):
            kind = "write"
        elif cmd == CMD_FLUSH:
            kind = "flush"
        else:
            return E.EINVAL, b""
        if kind != "flush":
            if cmd == CMD_READ and length > MAX_PAYLOAD:
                return E.EINVAL, b""
            if offset + length > size:
                return (E.EINVAL if cmd == CMD_READ else E.ENOSPC), b""
            if kind == "write" and self.store.readonly:
                return E.EPERM, b""
        verdict = self.faults.check(kind, offset, length)
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if verdict.fail or self.faults.failing_now(kind, offset, length):
            return E.EIO, b""
        try:
            if cmd == CMD_READ:
                self.stats.reads += 1
                data = self.store.read(offset, length)
                return 0, data.ljust(length, b"\0")  # the file shrank under us: zeros
            if cmd == CMD_WRITE:
                self.stats.writes += 1
                self.store.write(offset, payload, fua=bool(flags & CMD_FLAG_FUA))
            elif cmd == CMD_TRIM:
                self.stats.trims += 1
                self.store.trim(offset, length)
            else:
                self.stats.flushes += 1
                self.store.flush()
        except OSError as exc:
            log.warning("nbd %s: %s failed: %s", self.socket_path, kind, exc)
            return (exc.errno if exc.errno in (E.ENOSPC, E.EPERM) else E.EIO), b""
        return 0, b""

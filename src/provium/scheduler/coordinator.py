"""The dispatcher's coordination service: pool charges, claims and barriers for runners.

Every test file runs in its own runner process, but the pool and the run-wide
barriers must be one thing for the whole run.  So the dispatcher listens on a
unix socket (its path is in the runner's settings); each runner connects once,
says which file it is (`hello`), and then asks over that one connection:

  reserve {id, what, amounts:[[memory, cpus], ...]}  -> {id, ok, charges:[...]} | {id, ok:false, error}
  release {charge}                                   (no answer)
  claim   {id, memory, cpus}                          -> {id, ok} | {id, ok:false, error}
  barrier {id, name, count, timeout}                  -> {id, ok, met, message}
  cancel  {target}                                    (a reserve or barrier the runner gave up on)
  build   {id, profile}                               -> {id, ok} | {id, ok:false, error}

`build` runs a profile's `build` command the first time a VM of that profile is
about to boot anywhere in the run, and answers every file that asks with that
one outcome: a profile no selected file boots is never built, and its failing
build fails nothing.  The build runs on a thread of its own (it may take
minutes; the selector must keep serving the pool) and its answer comes back
through a socketpair the selector watches.

Frames are the project's usual 4-byte big-endian length + msgpack map.  A
reserve that does not fit is parked and answered when it fits, so a runner's
wait costs the dispatcher nothing; the dispatcher adds the time a file spent
parked to its kill deadline (and the runner to its own timeouts).  When a
runner goes away, everything its file held is released.

Both ends live here (the `Coordinator` in the dispatcher, the `Client` in the
runner) so the wire format is written down once.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from provium.errors import ProtocolError
from provium.events.types import ResourceAmount
from provium.protocol import framing
from provium.protocol.decoder import FrameDecoder

from .pool import Pool, PoolRefused, Request, fits, fmt_amount

MAX_MSG = 1 << 20


# ---- dispatcher side ---------------------------------------------------------------


@dataclass
class _Conn:
    sock: socket.socket
    owner: int = -1  # the file's index once it said hello
    frames: FrameDecoder = field(default_factory=lambda: FrameDecoder(MAX_MSG))
    out: bytearray = field(default_factory=bytearray)


def _owner(c: _Conn) -> int:
    """The file a connection speaks for (set by its hello, which every other op follows)."""
    assert c.owner is not None
    return c.owner


@dataclass
class _FileState:
    """What the coordinator knows about one running file."""

    conn: _Conn | None = None
    claim: ResourceAmount | None = None
    claim_used: dict[int, ResourceAmount] = field(default_factory=dict)  # charge id -> amount (from the claim)
    parked: dict[int, float] = field(default_factory=dict)  # request id -> since (monotonic)
    waited: float = 0.0  # seconds spent parked, finished parks only


@dataclass
class _Arrival:
    owner: int
    req_id: int
    deadline: float


@dataclass
class _Barrier:
    count: int
    waiting: list[_Arrival] = field(default_factory=list)


class Coordinator:
    """Serves runners on a unix socket.  Single-threaded: the dispatcher calls
    `on_ready` for the selector keys it registered, and `tick` regularly."""

    def __init__(self, path: str, pool: Pool, sel: selectors.BaseSelector, *,
                 live_files: Callable[[], int] = lambda: 1, charge_vms: bool = True,
                 build: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._build = build  # runs one profile's build command; None: this run builds nothing
        self._builds: dict[str, concurrent.futures.Future] = {}
        self._builder: concurrent.futures.ThreadPoolExecutor | None = None
        self._built: queue.SimpleQueue = queue.SimpleQueue()  # (conn, answer) from the build thread
        self._build_wake: tuple[socket.socket, socket.socket] | None = None
        # A file waiting for a build is parked like one waiting for the pool: its kill deadline moves back.
        self._build_waits = itertools.count(1 << 50)  # parked keys, apart from pool request ids
        self.pool = pool
        self.charge_vms = charge_vms
        self._sel = sel
        self._live_files = live_files
        self._files: dict[int, _FileState] = {}
        self._barriers: dict[str, _Barrier] = {}
        self._claim_ids = itertools.count(1 << 40)  # claim slices: never collide with pool charge ids
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        self._listener.setblocking(False)
        sel.register(self._listener, selectors.EVENT_READ, ("coord-listen", None))

    # ---- files -------------------------------------------------------------

    def file_started(self, owner: int) -> None:
        self._files[owner] = _FileState()

    def file_ended(self, owner: int) -> None:
        """The runner is gone: release all it held and answer whoever its exit unblocks."""
        st = self._files.pop(owner, None)
        if st is not None and st.conn is not None:
            self._drop(st.conn)
        for b in self._barriers.values():
            b.waiting = [a for a in b.waiting if a.owner != owner]
        self._granted(self.pool.release_owner(owner))
        self._check_unmeetable()

    def all_waiting(self, owners: Iterable[int]) -> bool:
        """True when each of `owners` waits here: at a barrier or parked in the pool."""
        at_barrier = {a.owner for b in self._barriers.values() for a in b.waiting}
        for owner in owners:
            st = self._files.get(owner)
            if owner not in at_barrier and not (st and st.parked):
                return False
        return True

    def parked_since(self, owner: int) -> float | None:
        st = self._files.get(owner)
        return min(st.parked.values()) if st and st.parked else None

    def waited(self, owner: int, now: float | None = None) -> float:
        """Seconds the file spent parked in the pool (including a park in progress)."""
        st = self._files.get(owner)
        if st is None:
            return 0.0
        since = self.parked_since(owner)
        return st.waited + ((now or time.monotonic()) - since if since is not None else 0.0)

    # ---- selector plumbing ----------------------------------------------------

    def on_ready(self, kind: str, conn: Any, mask: int) -> None:
        if kind == "coord-build":
            self._answer_builds()
        elif kind == "coord-listen":
            self._accept()
        elif kind == "coord-conn":
            if mask & selectors.EVENT_READ:
                self._read(conn)
            if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                self._flush(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            c = _Conn(sock)
            self._sel.register(sock, selectors.EVENT_READ, ("coord-conn", c))

    def _read(self, c: _Conn) -> None:
        while True:
            try:
                chunk = c.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._drop(c)
                return
            c.frames.feed(chunk)
        while True:
            try:
                body = c.frames.next()
                if body is None:
                    return
                msg = framing.unpack(body)
            except framing.FrameError:  # oversized or not msgpack: a broken peer
                self._drop(c)
                return
            if isinstance(msg, dict):
                self._handle(c, msg)

    def _send(self, c: _Conn, msg: dict) -> None:
        if c.sock.fileno() < 0:
            return
        c.out += framing.encode_frame(msg)
        self._flush(c)

    def _flush(self, c: _Conn) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                c.out.clear()
                return
            del c.out[:n]
        try:
            self._sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0),
                             ("coord-conn", c))
        except (KeyError, ValueError):
            pass

    def _drop(self, c: _Conn) -> None:
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def close(self) -> None:
        if self._builder is not None:
            self._builder.shutdown(wait=True, cancel_futures=True)  # a build under way finishes
        if self._build_wake is not None:
            try:
                self._sel.unregister(self._build_wake[0])
            except (KeyError, ValueError):
                pass
            for sock in self._build_wake:
                sock.close()
        for st in self._files.values():
            if st.conn is not None:
                self._drop(st.conn)
        try:
            self._sel.unregister(self._listener)
        except (KeyError, ValueError):
            pass
        self._listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    # ---- requests -------------------------------------------------------------

    def _handle(self, c: _Conn, msg: dict) -> None:
        op = msg.get("op")
        if op == "hello":
            owner = msg.get("owner")
            st = self._files.get(owner) if isinstance(owner, int) else None
            if st is None or not isinstance(owner, int):
                self._drop(c)
                return
            c.owner = owner
            st.conn = c
            return
        if c.owner not in self._files:
            self._drop(c)
            return
        st = self._files[c.owner]
        rid: Any = msg.get("id")
        try:
            if op == "reserve":
                self._reserve(c, st, rid, msg)
            elif op == "release":
                self._release(st, msg.get("charge"))
            elif op == "claim":
                self._claim(c, st, rid, msg)
            elif op == "barrier":
                self._barrier(c, rid, msg)
            elif op == "cancel":
                self._cancel(c, st, msg.get("target"))
            elif op == "build":
                self._build_profile(c, rid, msg)
            else:
                self._send(c, {"id": rid, "ok": False, "error": f"unknown coordinator op `{op}`"})
        except (TypeError, ValueError, KeyError) as exc:
            self._send(c, {"id": rid, "ok": False, "error": f"bad `{op}` request: {exc}"})

    @staticmethod
    def _amount(pair: Any) -> ResourceAmount:
        mem, cpus = pair
        if not isinstance(mem, int) or not isinstance(cpus, int) or mem < 0 or cpus < 0:
            raise ValueError(f"amount must be two non-negative integers, got {pair!r}")
        return ResourceAmount(mem, cpus)

    def _reserve(self, c: _Conn, st: _FileState, rid: int, msg: dict) -> None:
        amounts = [self._amount(p) for p in msg["amounts"]]
        what = str(msg.get("what", "a boot"))
        if not self.charge_vms:
            # `--vmm local`: VMs are host processes; the file's overhead holds its CPU.
            self._send(c, {"id": rid, "ok": True, "charges": [next(self._claim_ids) for _ in amounts]})
            return
        if st.claim is not None:
            # The claim is a hard cap: boots draw from it and never queue on the pool.
            in_use = ResourceAmount(sum(a.memory_bytes for a in st.claim_used.values()),
                                    sum(a.cpus for a in st.claim_used.values()))
            need = ResourceAmount(sum(a.memory_bytes for a in amounts), sum(a.cpus for a in amounts))
            left = ResourceAmount(st.claim.memory_bytes - in_use.memory_bytes, st.claim.cpus - in_use.cpus)
            if not fits(need, left):
                self._send(c, {"id": rid, "ok": False, "error":
                               f"{what} needs {fmt_amount(need)} but the file's claim is {fmt_amount(st.claim)} "
                               f"with {fmt_amount(in_use)} already in use; raise provium:claim to the file's peak"})
                return
            ids = []
            for a in amounts:
                cid = next(self._claim_ids)
                st.claim_used[cid] = a
                ids.append(cid)
            self._send(c, {"id": rid, "ok": True, "charges": ids})
            return
        req = self.pool.new_request(_owner(c), amounts, what, time.monotonic())
        self._submit(c, st, rid, req)

    def _submit(self, c: _Conn, st: _FileState, rid: int, req: Request) -> None:
        req.rid = rid
        try:
            grant = self.pool.request(req)
        except PoolRefused as exc:
            self._send(c, {"id": rid, "ok": False, "error": str(exc)})
            return
        if grant is not None:
            self._answer_grant(c, grant.charges, req)
        else:
            st.parked[req.id] = time.monotonic()

    def _answer_grant(self, c: _Conn, charges: list[int], req: Request) -> None:
        if req.claim:
            st = self._files.get(_owner(c))
            if st is not None:
                st.claim = req.total
        self._send(c, {"id": req.rid, "ok": True, "charges": charges})

    def _granted(self, grants: list) -> None:
        now = time.monotonic()
        for g in grants:
            st = self._files.get(g.request.owner)
            if st is None or st.conn is None:
                continue
            since = st.parked.pop(g.request.id, None)
            if since is not None:
                st.waited += now - since
            self._answer_grant(st.conn, g.charges, g.request)

    def _release(self, st: _FileState, charge: Any) -> None:
        if not isinstance(charge, int):
            return
        if st.claim_used.pop(charge, None) is not None:
            return
        self._granted(self.pool.release(charge))

    def _claim(self, c: _Conn, st: _FileState, rid: int, msg: dict) -> None:
        amount = self._amount((msg.get("memory", 0), msg.get("cpus", 0)))
        if st.claim is not None or any(r.claim for r in self.pool.parked() if r.owner == c.owner):
            self._send(c, {"id": rid, "ok": False, "error": "lab claim already held; one-shot per file"})
            return
        if not fits(amount, self.pool.total):
            self._send(c, {"id": rid, "ok": False, "error":
                           f"lab claim exceeds total pool budget: the claim is {fmt_amount(amount)}, the pool "
                           f"is {fmt_amount(self.pool.total)} (raise --mem/--cpus, or claim less)"})
            return
        req = self.pool.new_request(_owner(c), [amount], "the file's claim", time.monotonic())
        req.claim = True
        self._submit(c, st, rid, req)

    def _cancel(self, c: _Conn, st: _FileState, target: Any) -> None:
        if not isinstance(target, int):
            return
        for r in self.pool.parked():
            if r.owner == c.owner and r.rid == target:
                self.pool.cancel(r.id)
                since = st.parked.pop(r.id, None)
                if since is not None:
                    st.waited += time.monotonic() - since
                return
        for name, b in self._barriers.items():
            for a in b.waiting:
                if a.owner == c.owner and a.req_id == target:
                    b.waiting.remove(a)
                    return

    # ---- barriers --------------------------------------------------------------------

    def _barrier(self, c: _Conn, rid: int, msg: dict) -> None:
        name, count, timeout = msg["name"], msg["count"], msg["timeout"]
        if not isinstance(name, str) or not isinstance(count, int) or not isinstance(timeout, (int, float)):
            raise ValueError("name, count and timeout must be str, int and number")
        b = self._barriers.get(name)
        if b is not None and not b.waiting:
            b = None  # a released barrier starts a new round, with whatever count comes first
        if b is None:
            b = self._barriers[name] = _Barrier(count)
        elif b.count != count:
            self._send(c, {"id": rid, "ok": True, "met": False, "message":
                           f"barrier `{name}`: called with count {count} but the waiting callers use count "
                           f"{b.count}; every caller must pass the same count"})
            return
        b.waiting.append(_Arrival(_owner(c), rid, time.monotonic() + max(0.0, float(timeout))))
        if len(b.waiting) >= b.count:
            self._release_barrier(name, b, True, None)
        else:
            self._check_unmeetable()

    # ---- profile builds ---------------------------------------------------------

    def _build_profile(self, c: _Conn, rid: int, msg: dict) -> None:
        name = msg["profile"]
        if not isinstance(name, str):
            raise ValueError("profile must be a string")
        if self._build is None:
            self._send(c, {"id": rid, "ok": True})
            return
        fut = self._builds.get(name)
        if fut is None:
            if self._builder is None:
                # One build at a time: builds print to the terminal and compete for the CPU.
                self._builder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="provium-build")
                r, w = socket.socketpair()
                r.setblocking(False)
                self._build_wake = (r, w)
                self._sel.register(r, selectors.EVENT_READ, ("coord-build", None))
            fut = self._builds[name] = self._builder.submit(self._build, name)
        key = next(self._build_waits)
        st = self._files.get(_owner(c))
        if st is not None and not fut.done():
            st.parked[key] = time.monotonic()
        fut.add_done_callback(lambda f: self._on_built(c, rid, f, key))

    def _on_built(self, c: _Conn, rid: int, fut: concurrent.futures.Future, key: int) -> None:
        """On the build thread (or at once if the build had ended): queue the answer, wake the selector."""
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled():
            answer = {"id": rid, "ok": False, "error": "the run ended before the build did"}
        elif exc is not None:
            answer = {"id": rid, "ok": False, "error": str(exc) or type(exc).__name__}
        else:
            answer = {"id": rid, "ok": True}
        self._built.put((c, answer, key))
        if self._build_wake is not None:
            try:
                self._build_wake[1].send(b"x")
            except OSError:
                pass

    def _answer_builds(self) -> None:
        assert self._build_wake is not None
        try:
            while self._build_wake[0].recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                c, answer, key = self._built.get_nowait()
            except queue.Empty:
                return
            st = self._files.get(c.owner)
            since = st.parked.pop(key, None) if st is not None else None
            if st is not None and since is not None:
                st.waited += time.monotonic() - since
            self._send(c, answer)

    def _release_barrier(self, name: str, b: _Barrier, met: bool, why: str | None,
                         who: list[_Arrival] | None = None) -> None:
        release = list(b.waiting) if who is None else who
        for a in release:
            b.waiting.remove(a)
            st = self._files.get(a.owner)
            if st is not None and st.conn is not None:
                self._send(st.conn, {"id": a.req_id, "ok": True, "met": met, "message": why})

    def _check_unmeetable(self) -> None:
        """A barrier waiting for more callers than there are files left to call it
        can never be met: answer its callers now instead of at their timeout."""
        live = self._live_files()
        for name, b in self._barriers.items():
            if b.waiting and b.count > live:
                self._release_barrier(name, b, False,
                                      f"barrier `{name}` can never be met: it waits for {b.count} callers but "
                                      f"only {live} file(s) of this run are still running or waiting to run, "
                                      "and each file is one caller at a time")

    def next_deadline(self) -> float | None:
        ds = [a.deadline for b in self._barriers.values() for a in b.waiting]
        return min(ds) if ds else None

    def tick(self, now: float) -> None:
        for name, b in self._barriers.items():
            late = [a for a in b.waiting if a.deadline <= now]
            if late:
                self._release_barrier(name, b, False,
                                      f"barrier `{name}`: timed out with {len(b.waiting)} of {b.count} callers "
                                      "arrived", late)


# ---- runner side ------------------------------------------------------------------------


class CoordinatorError(ProtocolError):
    """The coordinator refused a request, or the connection to it broke."""


class Client:
    """A runner's connection to its dispatcher.  Thread-safe: requests may come
    from the Lua thread and the session loop at once; a reader thread hands
    each answer to the future of its request."""

    def __init__(self, path: str, owner: int) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._send({"op": "hello", "owner": owner})
        self._reader = threading.Thread(target=self._read_loop, name="provium-coordinator", daemon=True)
        self._reader.start()

    def _send(self, msg: dict) -> None:
        data = framing.encode_frame(msg)
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise CoordinatorError(f"lost the connection to the dispatcher: {exc}") from exc

    def request(self, op: str, **fields: Any) -> tuple[int, concurrent.futures.Future]:
        """Send a request; returns its id and a future for the answer (a dict)."""
        rid = next(self._ids)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise CoordinatorError("the connection to the dispatcher is closed")
            self._pending[rid] = fut
        try:
            self._send({"op": op, "id": rid, **fields})
        except CoordinatorError:
            with self._lock:
                self._pending.pop(rid, None)
            raise
        return rid, fut

    def notify(self, op: str, **fields: Any) -> None:
        """A message without an answer (release, cancel); never raises."""
        try:
            self._send({"op": op, **fields})
        except CoordinatorError:
            pass

    def cancel(self, rid: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)
        self.notify("cancel", target=rid)

    def _read_loop(self) -> None:
        f = self._sock.makefile("rb")
        try:
            while True:
                msg = framing.read_frame(f, MAX_MSG)
                if not isinstance(msg, dict):
                    continue
                with self._lock:
                    fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]  # None finds nothing
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (framing.FrameError, OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._closed = True
                pending = list(self._pending.values())
                self._pending.clear()
            for fut in pending:
                if not fut.done():
                    fut.set_exception(CoordinatorError("lost the connection to the dispatcher"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

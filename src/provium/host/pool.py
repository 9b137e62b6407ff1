"""The runner's side of the resource pool: VM charges, the file's claim, barriers.

A `Session` has one `HostPool`.  Under the `provium` CLI it talks to the
dispatcher's coordinator (`provium.scheduler.coordinator.Client`), which owns
the run's one pool and its barriers.  Without a dispatcher (a single file run
in-process, the Python API, a REPL) there is no pool: boots are free, a claim
is only checked for being the file's first, and barriers meet callers of this
process (other threads).

What a VM costs: its memory + 100 MiB of VMM overhead, and its vCPUs, as the
VM will boot (declared or default sizes).  The charge is taken when the boot
starts (waiting for the pool if it is full) and given back at shutdown.
`lab:boot()` takes one joint charge for all its members at once, so a file
never holds half its VMs while waiting for the other half.

Time spent waiting for the pool is counted (`waited()`), so the runner's
timeouts can leave it out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImageError
from .errors import StateError

MIB = 1 << 20
VM_OVERHEAD = 100 * MIB
DEFAULT_BARRIER_TIMEOUT = 60.0


class PoolError(StateError):
    """The pool refused: more than the pool or the file's claim, or a deadlock."""


class ProfileBuildFailed(ImageError):
    """A profile's `build` command, run by the dispatcher for this run, failed."""


@dataclass
class Charge:
    """Resources held for one VM; `release()` gives them back (idempotent)."""

    pool: HostPool
    ids: list[int] = field(default_factory=list)
    released: bool = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.pool._release(self.ids)


def vm_amount(spec: Any) -> tuple[int, int]:
    """(memory bytes, cpus) a VM with this launch spec is charged."""
    return spec.memory_bytes + VM_OVERHEAD, spec.cpus


class _LocalBarriers:
    """In-process barriers (no dispatcher): callers on other threads meet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state: dict[str, dict[str, Any]] = {}  # name -> {count, arrived, generation}

    def wait(self, name: str, count: int, timeout: float, cancelled: threading.Event) -> tuple[bool, str | None]:
        deadline = time.monotonic() + timeout
        with self._cond:
            st = self._state.get(name)
            if st is None or st["arrived"] == 0:
                st = self._state[name] = {"count": count, "arrived": 0, "generation": (st or {}).get("generation", 0)}
            elif st["count"] != count:
                return False, (f"barrier `{name}`: called with count {count} but the waiting callers use count "
                               f"{st['count']}; every caller must pass the same count")
            st["arrived"] += 1
            gen = st["generation"]
            if st["arrived"] >= count:
                st["arrived"] = 0
                st["generation"] += 1
                self._cond.notify_all()
                return True, None
            while st["generation"] == gen:
                left = deadline - time.monotonic()
                if left <= 0 or cancelled.is_set():
                    st["arrived"] -= 1  # roll our arrival back
                    return False, (f"barrier `{name}`: timed out after {timeout:g}s with {st['arrived'] + 1} of "
                                   f"{count} callers arrived (without the provium dispatcher only threads of "
                                   "this process can meet here)")
                self._cond.wait(min(left, 0.1))
            return True, None


_local_barriers = _LocalBarriers()


class HostPool:
    """The pool as one file sees it.  `client` is a coordinator client, or None
    for no pool."""

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self._held: dict[int, Charge] = {}  # id(vm) -> its charge
        self._prepaid: dict[int, Charge] = {}  # id(vm) -> a charge taken by lab:boot for it
        self._lock = threading.Lock()
        self._waited = 0.0
        self._waiting_since: list[float] = []
        self._built: set[str] = set()  # profiles whose build the dispatcher has done

    @property
    def connected(self) -> bool:
        return self.client is not None

    # ---- waiting, counted ---------------------------------------------------

    def waited(self) -> float:
        """Seconds spent waiting for the pool so far (including a wait in progress)."""
        now = time.monotonic()
        with self._lock:
            return self._waited + sum(now - s for s in self._waiting_since)

    async def _ask(self, op: str, **fields: Any) -> dict:
        rid, fut = self.client.request(op, **fields)
        began = time.monotonic()
        with self._lock:
            self._waiting_since.append(began)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self.client.cancel(rid)
            raise
        except Exception as exc:
            raise PoolError(str(exc)) from exc
        finally:
            with self._lock:
                self._waiting_since.remove(began)
                if op != "barrier":  # a barrier wait is the test's own time
                    self._waited += time.monotonic() - began

    # ---- VM charges -----------------------------------------------------------

    async def _reserve(self, what: str, amounts: list[tuple[int, int]]) -> list[Charge]:
        if self.client is None:
            return [Charge(self) for _ in amounts]
        ans = await self._ask("reserve", what=what, amounts=[list(a) for a in amounts])
        if not ans.get("ok"):
            raise PoolError(ans.get("error") or "the pool refused")
        return [Charge(self, [cid]) for cid in ans.get("charges", [])]

    async def take_vm_charge(self, vm: Any, spec: Any) -> None:
        """Before a VM boots: use the charge `lab:boot` took for it, or take one."""
        key = id(vm)
        with self._lock:
            pre = self._prepaid.pop(key, None)
        if pre is None:
            (pre,) = await self._reserve(f"vm `{vm.name}`", [vm_amount(spec)])
        with self._lock:
            self._held[key] = pre

    def drop_vm_charge(self, vm: Any) -> None:
        """The VM is down (or never came up): give its charge back."""
        with self._lock:
            ch = self._held.pop(id(vm), None) or self._prepaid.pop(id(vm), None)
        if ch is not None:
            ch.release()

    async def prepay(self, what: str, members: list[tuple[Any, Any]]) -> None:
        """One joint charge for several VMs about to boot together ([(vm, spec)])."""
        todo = [(vm, spec) for vm, spec in members if id(vm) not in self._held and id(vm) not in self._prepaid]
        if not todo:
            return
        charges = await self._reserve(what, [vm_amount(spec) for _, spec in todo])
        with self._lock:
            for (vm, _), ch in zip(todo, charges):
                self._prepaid[id(vm)] = ch

    def _release(self, ids: list[int]) -> None:
        if self.client is not None:
            for cid in ids:
                self.client.notify("release", charge=cid)

    # ---- profile builds -----------------------------------------------------------

    async def ensure_built(self, profile: Any) -> None:
        """Before a VM of `profile` boots: have the dispatcher run the profile's
        `build` command, once per run whichever file asks first (the wait counts as
        a pool wait, outside the test's time).  Without a dispatcher nothing is
        built here: the Python API builds when its session opens."""
        if self.client is None or not getattr(profile, "build", None) or profile.name in self._built:
            return
        ans = await self._ask("build", profile=profile.name)
        if not ans.get("ok"):
            raise ProfileBuildFailed(ans.get("error") or f"profile `{profile.name}`: build failed")
        self._built.add(profile.name)

    # ---- claim and barriers -------------------------------------------------------

    async def claim(self, memory: int, cpus: int) -> bool:
        """Reserve the file's claim (waits while the pool is full).  Returns
        whether a pool took it (False: no pool, nothing reserved)."""
        if self.client is None:
            return False
        ans = await self._ask("claim", memory=memory, cpus=cpus)
        if not ans.get("ok"):
            raise PoolError(ans.get("error") or "the pool refused the claim")
        return True

    async def barrier(self, name: str, count: int, timeout: float) -> tuple[bool, str | None]:
        if count <= 1:
            return True, None
        if self.client is None:
            cancelled = threading.Event()
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(None, _local_barriers.wait, name, count, timeout, cancelled)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        ans = await self._ask("barrier", name=name, count=count, timeout=timeout)
        if not ans.get("ok"):
            raise PoolError(ans.get("error") or "the barrier request failed")
        return bool(ans.get("met")), ans.get("message")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

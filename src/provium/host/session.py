"""A Session: one asyncio loop on a background thread, the VMM, the config.

Every I/O of the host model (agent calls, VMM control) runs on the session's
loop; the public API is synchronous and hands coroutines to it with `run()`.
Keeping one loop per session means one thread owns every socket, and the
caller's thread (the Lua interpreter's) only ever blocks on a future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import os
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from ..config import Config
from ..vmm.base import Vmm
from .errors import Interrupted, SessionError
from .pool import HostPool

if TYPE_CHECKING:
    from ..events.sinks import Sink
    from .lab import Lab
    from .opener import EventRecorder

CLOSE_VM_TIMEOUT = 60.0  # a backend that hangs in shutdown must not hang close()

EmitHook = Callable[..., None]
SiteProvider = Callable[[], "tuple[tuple[str, int] | None, str | None]"]


class Session:
    """Owns the event loop thread, the VMM and every VM created through it.

    `emit(kind, **payload)` forwards events (`vm_spawned`, `vm_shutdown`) to the
    hook given as `emit=`; the hook is called as `hook(kind, **payload)`, often
    on the session's loop thread (VM lifecycle runs there), so it must be quick
    and must not call `Session.run`.

    `site_provider`, when set, is called (on the caller's thread) whenever a
    stream or file handle is created, and returns `(creation_site, test_name)`
    where creation_site is `(file, line)` or None; the Lua layer sets it so
    diagnostics can say where a still-open stream came from.
    """

    def __init__(self, vmm: Vmm, config: Config | None = None, *, emit: EmitHook | None = None,
                 default_memory: int = 512 << 20, default_cpus: int = 1) -> None:
        if config is None:
            from ..config import load

            config = load(None)
        self.vmm = vmm
        self.config = config
        # Pool charges, the file's claim and barriers (host/pool.py); the runner
        # swaps in one connected to the dispatcher.
        self.pool = HostPool()
        self.default_memory = default_memory
        self.default_cpus = default_cpus
        self.site_provider: SiteProvider | None = None
        self._emit_hook = emit
        self.event_recorder: EventRecorder | None = None  # set by `Session.open(events=...)`, closed with the session
        self._labs: list[Lab] = []
        self._vms: list = []
        self._vms_lock = threading.Lock()
        self._inflight: set[concurrent.futures.Future] = set()
        self._inflight_lock = threading.Lock()
        self._interrupt_reason: str | None = None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        # Fire-and-forget work on the loop (closing a dropped stream, reaping a
        # dropped process): owned here, cancelled and awaited when the loop stops.
        self._background: set[asyncio.Task] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="provium-session", daemon=True)
        self._thread.start()
        self._ready.wait()

    @classmethod
    def open(cls, vmm: str | Vmm = "qemu", *, config: str | os.PathLike | Config | None = None,
             accel: str | None = None, events: str | os.PathLike | Sink | None = None,
             default_memory: int = 512 << 20, default_cpus: int = 1, prepare: bool = True) -> "Session":
        """A session built the way the `provium` CLI builds one.

        `vmm` is "qemu" (real guests) or "local" (the agent as a host process),
        or a `Vmm` you made; `config` a `provium.toml` path (default: the
        nearest one from the current directory up, else the built-in `linux`
        profile); `accel` "auto", "kvm" or "tcg" (default: each profile's own);
        `events` a path (or sink) receiving the msgpack event stream a CLI run
        saves with `--save-events`.  For "qemu", `prepare` first runs the CLI's
        host checks and dynamic profiles' `build` commands (`prepare=False`, like
        `--no-preflight --no-build`, skips them).  Use it as a context manager: leaving the
        block shuts down every VM and stops the session's thread.
        """
        from .opener import open_session

        return open_session(vmm, config=config, accel=accel, events=events,
                            default_memory=default_memory, default_cpus=default_cpus, prepare=prepare)

    def lab(self, name: str = "provium") -> "Lab":
        """A new root lab (Lua's `provium` object) whose VMs and bridges this
        session tears down when it closes; `lab.close()` (or `with`) ends it sooner."""
        from .lab import Lab, check_name

        check_name(name, "Session.lab")
        with self._vms_lock:
            if self._closed:
                raise SessionError("session is closed; create a new Session")
        lab = Lab(self, name)
        with self._vms_lock:
            self._labs.append(lab)
        return lab

    # ---- the loop ----------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for t in tasks:
                    t.cancel()
                if tasks:
                    self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run `coro` on the session loop and return its result (or raise its error).

        With `timeout`, a coroutine still running after that many seconds is
        cancelled and `SessionError` is raised.
        """
        if self._loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise SessionError("session is closed; create a new Session")
        if self.on_loop_thread():
            coro.close()
            raise SessionError("Session.run() called from the session's own loop thread "
                               "(it would wait for itself); await the coroutine instead")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        with self._inflight_lock:
            self._inflight.add(fut)
        try:
            return fut.result(timeout)
        except concurrent.futures.CancelledError:
            raise Interrupted(f"interrupted: {self._interrupt_reason or 'the operation was cancelled'}") from None
        except TimeoutError:
            # In 3.11 a coroutine's own asyncio.TimeoutError is this same class:
            # only a future still running means *our* wait expired.
            if fut.done():
                raise
            fut.cancel()
            raise SessionError(f"operation did not finish within {timeout:g}s (cancelled)") from None
        except BaseException:
            # KeyboardInterrupt and friends: do not leave the coroutine running.
            if not fut.done():
                fut.cancel()
            raise
        finally:
            with self._inflight_lock:
                self._inflight.discard(fut)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Start `coro` on the loop without waiting; returns a concurrent Future."""
        if self._loop.is_closed():
            coro.close()
            raise SessionError("session is closed; create a new Session")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _stop_background(self) -> None:
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """On the loop thread: run `coro` as a task this session owns (never awaited by the caller)."""
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def background_threadsafe(self, coro: Coroutine[Any, Any, Any]) -> None:
        """`background(coro)` from any thread; dropped (and closed) once the loop is gone."""
        try:
            self._loop.call_soon_threadsafe(self.background, coro)
        except RuntimeError:
            coro.close()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire-and-forget `fn(*args)` on the loop (ignored once the loop is gone).
        Safe from finalizers: never blocks."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    def interrupt(self, reason: str = "interrupted") -> int:
        """Cancel every call currently blocked in `run()` (from any thread).

        Each cancelled caller gets `Interrupted(reason)`.  Returns how many were
        cancelled.  Used by the runner when a test times out.
        """
        self._interrupt_reason = reason
        with self._inflight_lock:
            futs = list(self._inflight)
        n = 0
        for f in futs:
            if f.cancel():
                n += 1
        return n

    # ---- events and sites --------------------------------------------------------

    def emit(self, kind: str, **payload: Any) -> None:
        if self._emit_hook is not None:
            self._emit_hook(kind, **payload)

    def creation_site(self) -> tuple[tuple[str, int] | None, str | None]:
        if self.site_provider is None:
            return None, None
        try:
            return self.site_provider()
        except Exception:
            return None, None

    # ---- VMs ---------------------------------------------------------------------

    def _register(self, vm) -> None:
        with self._vms_lock:
            if self._closed:
                raise SessionError("session is closed; create a new Session")
            self._vms.append(vm)

    @property
    def vms(self) -> list:
        with self._vms_lock:
            return list(self._vms)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Shut down every VM created through this session, then stop the loop.
        Idempotent; errors from individual VMs are swallowed (they are going
        away regardless)."""
        with self._vms_lock:
            if self._closed:
                return
            self._closed = True
            vms = list(self._vms)
            labs = list(self._labs)
        if self._thread.is_alive():
            for lab in reversed(labs):
                try:
                    lab.close()  # bridges and disks; the VMs again below, harmlessly
                except Exception:  # noqa: BLE001 - closing reaches everything
                    pass
            for vm in reversed(vms):
                try:
                    self.run(vm.ashutdown(), timeout=CLOSE_VM_TIMEOUT)
                except Exception:
                    pass
            try:
                # Background work (a restore's prestarted QEMU, say) stops before the
                # backend closes, so nothing it starts can outlive the backend.
                self.run(self._stop_background(), timeout=30)
            except Exception:
                pass
            try:
                self.run(self.vmm.close(), timeout=30)
            except Exception:
                pass
            self.pool.close()
            if getattr(self, "_net_switch", None) is not None:  # made by a bridge; else no import
                from .bridge import close_switch

                close_switch(self)  # the network switch outlives no VM
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self.event_recorder is not None:
            self.event_recorder.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(vmm={getattr(self.vmm, 'name', '?')}, vms={len(self._vms)}{', closed' if self._closed else ''})"

"""Run one test file in this process: load it, run its tests in order, report.

`run_file(path, settings, emit)` returns a `FileOutcome` and sends events
(`test_started`, `test_passed`/`test_failed`/`test_skipped`, and the VMs'
`vm_spawned`/`vm_shutdown`) to `emit`, a callable taking an event object from
`provium.events.types`.

Timeouts: each test gets a deadline (meta.timeout, else `provium.timeout`,
else the run's default).  When it passes, a watchdog thread marks the Lua
state as timed out (a Lua hook then unwinds even a pure-Lua busy loop),
cancels the host call the test is blocked in, and shuts down every VM of the
file; the test fails with `test timeout exceeded (<duration>)`.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import config as config_mod
from .. import vmm as vmm_mod
from ..events import types as ev
from ..fsutil import printable
from ..host.errors import ArgumentError
from ..host.pynames import called_from_lua
from ..host.pool import HostPool
from ..host.session import Session
from ..host.values import parse_duration
from ..lua.convert import meta_map, to_py
from ..lua.errors import PositionedError
from ..lua.state import FileState, LuaChunkError
from .filters import skip_reason
from . import reset
from .outcome import FileOutcome, TestOutcome
from .settings import RunSettings

Emit = Callable[[Any], None]
SKIP_SENTINEL = "__PROVIUM_SKIP__"
CONSOLE_EXCERPT = 4096
STUCK_GRACE = 5.0  # seconds a timed-out test gets to unwind before `on_stuck`


def format_duration(secs: float) -> str:
    """`30s`, `500ms`, `1.5s` (how timeouts are named in messages)."""
    if secs < 1:
        ms = secs * 1000
        return f"{int(ms)}ms" if ms == int(ms) else f"{ms:g}ms"
    if secs == int(secs):
        return f"{int(secs)}s"
    return f"{secs:g}s"


class _Watchdog:
    """Fires `on_fire` once `seconds` pass unless cancelled first; then, if the
    test is still not back after STUCK_GRACE, calls `on_stuck`."""

    def __init__(self, seconds: float, on_fire: Callable[[], None],
                 on_stuck: Callable[[], None] | None = None,
                 waited: Callable[[], float] | None = None) -> None:
        self._done = threading.Event()
        self.fired = False
        self._on_fire = on_fire
        self._on_stuck = on_stuck
        # Time spent waiting for the pool does not count: the deadline moves back by it.
        self._waited = waited or (lambda: 0.0)
        self._thread = threading.Thread(target=self._run, args=(seconds,), name="provium-watchdog", daemon=True)
        self._thread.start()

    def _run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        base = self._waited()
        while True:
            left = deadline + (self._waited() - base) - time.monotonic()
            if left <= 0:
                break
            if self._done.wait(min(left, 1.0)):
                return
        self.fired = True
        try:
            self._on_fire()
        except Exception:  # noqa: BLE001 - the watchdog must not die silently mid-teardown
            pass
        if not self._done.wait(STUCK_GRACE) and self._on_stuck is not None:
            self._on_stuck()

    def cancel(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


@dataclass
class _Ctx:
    path: str  # as reported (fsutil.printable)
    settings: RunSettings
    emit: Emit
    fs_path: str = ""  # as on disk, for opening it
    state: FileState | None = None
    session: Session | None = None
    outcome: FileOutcome = field(default_factory=lambda: FileOutcome(path=""))
    on_stuck: Callable[[FileOutcome], None] | None = None
    file_deadline: float | None = None
    owner: int | None = None  # this file's id with the dispatcher's coordinator
    log_prefix: list[str] = field(default_factory=list)
    baseline: Any = None  # reset_between_tests: the root lab's LabSnapshot
    # The test running now and the ones after it, so a runner that has to give
    # up on a stuck test can still name it and list the rest as not run.
    current: tuple[str, dict] | None = None
    pending: list[tuple[str, dict]] = field(default_factory=list)
    next_index: int = 0  # pending[next_index:] have not started
    terminated: str | None = None  # why the runner was told to stop (SIGTERM)


_active: list[_Ctx] = []  # the file this process is running, for `terminate`


def terminate(text: str) -> None:
    """From any thread (the runner's signal watcher): stop the file now.

    The running test fails with `text`, the tests after it are listed as not
    run, VMs are shut down; if the test does not come back (blocked in C code)
    the runner gives up on it as on a stuck timeout."""
    if not _active:
        return
    ctx = _active[-1]
    ctx.terminated = text
    running = ctx.current
    _fire(ctx, text)

    def give_up() -> None:
        # Only if the same test is still in its body (not if it returned and the
        # runner is merely shutting VMs down).
        if ctx in _active and ctx.current is running and (running is not None or not ctx.outcome.tests):
            _stuck(ctx)

    timer = threading.Timer(STUCK_GRACE, give_up)
    timer.daemon = True
    timer.start()


def _safe_emit(emit: Emit | None) -> Emit:
    def send(event: Any) -> None:
        if emit is None:
            return
        try:
            emit(event)
        except Exception:  # noqa: BLE001 - events never fail a run
            pass

    return send


def load_config(settings: RunSettings) -> config_mod.Config:
    if settings.config_path:
        return config_mod.load(settings.config_path, explicit=True)
    return config_mod.load(None)


def make_vmm(settings: RunSettings) -> Any:
    opts = dict(settings.vmm_options)
    if settings.vmm == "qemu" and settings.accel and "accel" not in opts:
        opts["accel"] = settings.accel
    return vmm_mod.create(settings.vmm, **opts)


def run_file(path: str, settings: RunSettings | None = None, emit: Emit | None = None, *,
             config: config_mod.Config | None = None, vmm: Any = None,
             on_stuck: Callable[[FileOutcome], None] | None = None, owner: int | None = None) -> FileOutcome:
    """Run every test of `path`; never raises for anything the file does."""
    settings = settings or RunSettings()
    send = _safe_emit(emit)
    started = time.monotonic_ns()
    # Everything this file reports names it by its printable form (a name that is not
    # UTF-8 shows each such byte as \\xNN); only opening it uses the name as it is.
    shown = printable(path)
    out = FileOutcome(path=shown)
    ctx = _Ctx(path=shown, settings=settings, emit=send, outcome=out, on_stuck=on_stuck, fs_path=path)
    ctx.owner = owner
    if settings.file_timeout:
        ctx.file_deadline = time.monotonic() + settings.file_timeout
    _active.append(ctx)
    try:
        try:
            cfg = config if config is not None else load_config(settings)
            backend = vmm if vmm is not None else make_vmm(settings)
        except Exception as exc:  # noqa: BLE001 - a bad config is this file's chunk error
            out.chunk_error = str(exc) or type(exc).__name__
            return out
        with called_from_lua():  # the runner's own calls (teardown, resets) report to a Lua author
            _run(ctx, cfg, backend)
    finally:
        _active.remove(ctx)
        out.duration_ns = time.monotonic_ns() - started
        if ctx.terminated:
            out.timed_out = False
            out.chunk_error = out.chunk_error or ctx.terminated
            if out.chunk_error != ctx.terminated and not out.tests:
                out.chunk_error = ctx.terminated
    return out


def _session_hook(ctx: _Ctx) -> Callable[..., None]:
    def hook(kind: str, **payload: Any) -> None:
        cls = ev.EVENT_TYPES.get(kind)
        if cls is None:
            return
        if "file" not in payload and "file" in getattr(cls, "__dataclass_fields__", {}):
            payload["file"] = ctx.path  # the test file, as the field says (the reference puts the lab name)
        if "path" not in payload and "path" in getattr(cls, "__dataclass_fields__", {}):
            payload["path"] = ctx.path  # claim events name the file
        try:
            ctx.emit(cls(**payload))
        except TypeError:
            pass

    return hook


def _run(ctx: _Ctx, cfg: config_mod.Config, backend: Any) -> None:
    out = ctx.outcome
    s = ctx.settings
    session = Session(backend, cfg, emit=_session_hook(ctx),
                      default_memory=s.vm_memory or (512 << 20), default_cpus=s.vm_cpus or 1)
    ctx.session = session
    try:
        if s.coordinator and ctx.owner is not None:
            from ..scheduler.coordinator import Client  # only under the dispatcher: keeps plain runs lean

            try:
                session.pool = HostPool(Client(s.coordinator, ctx.owner))
            except OSError as exc:
                out.chunk_error = f"cannot reach the provium dispatcher at `{s.coordinator}`: {exc}"
                return
        try:
            source = open(ctx.fs_path or ctx.path, "rb").read()
        except OSError as exc:
            out.chunk_error = f"read `{ctx.path}`: {exc.strerror or exc}"
            return
        state = FileState(ctx.path, session, roots=list(cfg.roots), source_path=ctx.fs_path or None)
        ctx.state = state
        try:
            chunk = state.load(source)
            _guarded(ctx, None, lambda: _top_level(ctx, state, chunk), "file scope")
        except LuaChunkError as exc:
            out.chunk_error = str(exc)
            out.timed_out = state.timed_out
            return
        if state.timed_out:
            out.chunk_error = state._timeout_text
            out.timed_out = True
            return
        if reset.wanted(state) and _any_will_run(ctx, state):
            try:
                ctx.baseline = reset.take_baseline(state)
            except reset.BaselineError as exc:
                out.chunk_error = str(exc)
                return
        _run_tests(ctx, state)
    finally:
        acct = ctx.state.account if ctx.state is not None else None
        if acct is not None and acct.pooled:
            # The dispatcher releases the claim when this runner ends.
            ctx.emit(ev.ClaimReleased(path=ctx.path, amount=ev.ResourceAmount(acct.claim_memory or 0,
                                                                                acct.claim_cpus or 0)))
        try:
            if ctx.state is not None:
                ctx.state.close()
        finally:
            session.close()
            reset.drop(ctx.baseline)


def _top_level(ctx: _Ctx, state: FileState, chunk: Any) -> None:
    """Run the file's top level with its boots held, then boot them only if a test
    will run (lua/deferboot.py): a file whose tests are all filtered out boots nothing."""
    state.deferred.hold()
    state.run_chunk(chunk)
    try:
        state.deferred.release(boot=_any_will_run(ctx, state))
    except PositionedError as exc:
        raise LuaChunkError(str(exc)) from exc


def _any_will_run(ctx: _Ctx, state: FileState) -> bool:
    """Whether any test's body will run (the filters and skips of `_run_tests`)."""
    if state.file_skip() is not None:
        return False
    return any(skip_reason(meta_map(meta), ctx.settings) is None for _, meta, _ in state.tests())


def _guarded(ctx: _Ctx, seconds: float | None, fn: Callable[[], Any], what: str) -> tuple[Any, bool]:
    """Run fn under a watchdog of `seconds` (and the file deadline)."""
    limit, label = _limit(ctx, seconds)
    if limit is None:
        return fn(), False
    dog = _Watchdog(limit, lambda: _fire(ctx, label), lambda: _stuck(ctx), _pool_waited(ctx))
    try:
        return fn(), dog.fired
    finally:
        dog.cancel()


def _pool_waited(ctx: _Ctx) -> Callable[[], float]:
    session = ctx.session
    return session.pool.waited if session is not None else (lambda: 0.0)


def _file_deadline(ctx: _Ctx) -> float:
    """The file's deadline (the file has one), moved back by the time it waited for the pool."""
    assert ctx.file_deadline is not None
    return ctx.file_deadline + _pool_waited(ctx)()


def _limit(ctx: _Ctx, seconds: float | None) -> tuple[float | None, str]:
    """The watchdog period and the message it reports."""
    limit, label = seconds, f"test timeout exceeded ({format_duration(seconds)})" if seconds else ""
    if ctx.file_deadline is not None:
        left = max(0.0, _file_deadline(ctx) - time.monotonic())
        if limit is None or left < limit:
            limit = left
            label = f"file timeout exceeded ({format_duration(ctx.settings.file_timeout or 0.0)})"
    return limit, label


def _fire(ctx: _Ctx, text: str) -> None:
    """On the watchdog thread: stop the test and everything it waits on."""
    st, session = ctx.state, ctx.session
    test = st.current_test if st is not None else None
    if st is not None:
        st.mark_timed_out(text)
    if session is not None:
        session.interrupt(text)
        # A VM stuck in a guest op cannot be trusted afterwards: shut every VM of
        # the file down (as the reference does), and tell later tests why.
        what = f'test "{test}" timed out ({text})' if test else text
        cause = (f"provium shut it down when {what}; a timeout shuts down every VM of the file. "
                 "Create the VM inside each test that needs it, or set `provium.reset_between_tests = true`, "
                 "so one test's timeout does not take the VM from the next")
        for vm in session.vms:
            vm.shut_down_because(cause)
    # A test blocked in C code waits on a host process (`os.execute("sleep 30")`,
    # `io.popen`): ending it lets the call return, so the hook can stop the test.
    kill_children()


def kill_children() -> None:
    """SIGKILL every process this runner started, children of children included.

    The VMs were shut down just before, so what is left is what the test itself
    started on the host; nothing of it may outlive the test (psutil walks /proc
    for us instead of a hand-written walk; imported here, on the rare timeout path,
    as it costs a runner's zygote several milliseconds to import)."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=2)


def _stuck(ctx: _Ctx) -> None:
    """The timed-out test did not come back (blocked in C code): name it, list the
    tests after it as not run, end every process we started, and hand over."""
    out = ctx.outcome
    if ctx.on_stuck is None or out is None:
        return
    out.timed_out = True
    text = (ctx.state._timeout_text if ctx.state is not None else None) or "test timeout exceeded"
    if ctx.current is not None:
        name, meta = ctx.current
        out.tests.append(TestOutcome(name, "timed_out", f"{text}; the test did not stop (blocked outside Lua) "
                                                        f"and the runner ended it", meta=meta))
        ctx.emit(ev.TestFailed(path=ctx.path, name=name, reason=text, meta=meta))
    _not_run(ctx, f"not run: an earlier test timed out ({text})")
    kill_children()
    ctx.on_stuck(out)


def _not_run(ctx: _Ctx, reason: str) -> None:
    """Report every test still pending as skipped with `reason`, so none goes unlisted."""
    for name, meta in ctx.pending[ctx.next_index:]:
        ctx.outcome.tests.append(TestOutcome(name, "skipped", reason, meta=meta))
        ctx.emit(ev.TestSkipped(path=ctx.path, name=name, reason=reason, meta=meta))
    ctx.next_index = len(ctx.pending)


def _test_timeout(meta: dict[str, Any], state: FileState, settings: RunSettings) -> float | None:
    """meta.timeout, else provium.timeout, else the run's default (None = no limit)."""
    if meta.get("timeout") is not None:
        v = meta["timeout"]
        secs = parse_duration(v, "meta.timeout")
        if secs <= 0:
            raise ArgumentError(f"meta.timeout must be a positive duration, got {v!r}")
        return secs
    file_value = state.file_config.get("timeout")
    if file_value is not None:
        secs = parse_duration(to_py(file_value), "provium.timeout")
        if secs and secs > 0:
            return secs
    return settings.test_timeout or None


def _console_excerpt(state: FileState) -> str:
    parts = []
    vms = [vm for _, vm in state.root.all_vms()]
    if state.test_lab is not None:
        vms += [vm for _, vm in state.test_lab.all_vms()]
    for vm in vms:
        try:
            tail = vm.console_tail(CONSOLE_EXCERPT)
        except Exception:  # noqa: BLE001
            tail = b""
        if tail:
            parts.append(f"---- vm {vm.name} (last {len(tail)} bytes) ----\n"
                         f"{tail.decode('utf-8', 'replace')}\n")
    return "".join(parts)


def _console_lines(state: FileState, *, timed_out: bool) -> str:
    """The console's last lines for the failure message, when the VM misbehaved: a
    VM that died (agent lost), or every VM that ran when the test timed out (a
    hung guest shows why there).  Bounded per VM; the event carries the 4 KiB excerpt."""
    vms = [vm for _, vm in state.root.all_vms()]
    if state.test_lab is not None:
        vms += [vm for _, vm in state.test_lab.all_vms()]
    blocks = []
    for vm in vms:
        # A timeout shuts the test's VMs down before we get here: any VM that ran counts.
        if vm.state == "dead" or (timed_out and vm.state != "created"):
            from ..host.console import failure_block as console_failure_block  # VMs exist: loaded

            try:
                block = console_failure_block(vm.name, vm.console_tail(CONSOLE_EXCERPT))
            except Exception:  # noqa: BLE001 - a missing console must not hide the failure
                block = ""
            if block:
                blocks.append(block)
    return "\n".join(blocks)


def _run_tests(ctx: _Ctx, state: FileState) -> None:
    out, s, send = ctx.outcome, ctx.settings, ctx.emit
    todo = state.file_skip()
    tests = [(name, meta_tbl, fn, meta_map(meta_tbl)) for name, meta_tbl, fn in state.tests()]
    ctx.pending = [(name, meta) for name, _, _, meta in tests]
    for i, (name, meta_tbl, fn, meta) in enumerate(tests):
        ctx.next_index = i
        if ctx.file_deadline is not None and time.monotonic() >= _file_deadline(ctx):
            out.timed_out = True
            _not_run(ctx, f"not run: file timeout exceeded ({format_duration(s.file_timeout or 0.0)})")
            break
        ctx.next_index = i + 1
        reason = todo if todo is not None else skip_reason(meta, s)
        if reason is not None:
            out.tests.append(TestOutcome(name, "skipped", reason, meta=meta))
            send(ev.TestSkipped(path=ctx.path, name=name, reason=reason, meta=meta))
            continue
        try:
            timeout = _test_timeout(meta, state, s)
        except ArgumentError as exc:
            text = state.at_declaration(name, str(exc))
            out.tests.append(TestOutcome(name, "failed", text, meta=meta))
            send(ev.TestStarted(path=ctx.path, name=name, meta=meta))
            send(ev.TestFailed(path=ctx.path, name=name, reason=text, meta=meta))
            continue
        ctx.current = (name, meta)
        result = _run_one(ctx, state, name, meta, meta_tbl, fn, timeout)
        ctx.current = None
        out.tests.append(result)
        if ctx.terminated:
            _not_run(ctx, f"not run: {ctx.terminated}")
            break
        if ctx.baseline is not None:
            state.clear_timeout()
            reset.restore_baseline(state, ctx.baseline)
        if state.timed_out and result.status == "timed_out" and result.message \
                and result.message.startswith("file timeout"):
            out.timed_out = True
            _not_run(ctx, f"not run: {result.message.split(';')[0]}")
            break


def _run_one(ctx: _Ctx, state: FileState, name: str, meta: dict, meta_tbl: Any, fn: Any,
             timeout: float | None) -> TestOutcome:
    send = ctx.emit
    state.clear_timeout()
    t = state.begin_test(name, meta_tbl)
    send(ev.TestStarted(path=ctx.path, name=name, meta=meta))
    began = time.monotonic_ns()
    (ok, err), fired = _guarded(ctx, timeout, lambda: state.run_body(fn, t), "test")
    duration = time.monotonic_ns() - began
    outcome, skip_reason_, failed, failed_msg, log = state.outcome(t)
    message: str | None
    if fired or state.timed_out:
        status = "timed_out"
        message = state._timeout_text
        if not ok and err and err != message and not err.endswith(message):
            message += f"; op error: {err}"
    elif outcome == "skip" or (not ok and err and SKIP_SENTINEL in err):
        status, message = "skipped", skip_reason_
    elif not ok:
        status, message = "failed", err
    elif failed:
        status, message = "failed", failed_msg or "assertion failed (caught by pcall)"
    else:
        status, message = "passed", None
    if status in ("failed", "timed_out"):
        excerpt = _console_excerpt(state)
        send(ev.TestFailed(path=ctx.path, name=name, duration_ns=duration, reason=message or "",
                           console_excerpt=excerpt, meta=meta))
        shown = _console_lines(state, timed_out=status == "timed_out")
        if shown:
            message = f"{message}\n{shown}"
    elif status == "skipped":
        send(ev.TestSkipped(path=ctx.path, name=name, reason=message or "", meta=meta))
    else:
        send(ev.TestPassed(path=ctx.path, name=name, duration_ns=duration, meta=meta))
    errors = state.end_test()
    log = list(log) + [f"teardown: {e}" for e in errors]
    state.clear_timeout()
    return TestOutcome(name, status, message, log, duration, meta)


# ---- listing ----------------------------------------------------------------------------


@dataclass
class TestInfo:
    __test__ = False
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


class _ListingVmm(vmm_mod.Vmm):
    """Listing never starts guests: a file that boots at top level is listed
    from its source text instead."""

    name = "listing"

    async def launch(self, spec: Any) -> Any:
        raise vmm_mod.VmmError(LISTING_REFUSAL)


LISTING_REFUSAL = "not booting VMs while listing tests"


_TEST_CALL = re.compile(r"""(?<![\w.:])test\s*\(\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)')""")


def list_tests(path: str, settings: RunSettings | None = None) -> list[TestInfo]:
    """The tests a file declares (name and meta), without booting anything.

    The top level runs with its boots held (lua/deferboot.py) and then dropped,
    on a VMM that refuses to boot; if it needs a booted VM anyway (say it runs a
    command at file scope), the names are read from literal `test("name", ...)`
    calls in the source instead (meta unknown).  A file
    that cannot be read or compiled, whose top level raises for another reason,
    or runs past the file timeout, raises an error naming it.
    """
    settings = settings or RunSettings()
    try:
        source = open(path, "rb").read()
    except OSError as exc:
        raise OSError(exc.errno, f"read `{printable(path)}`: {exc.strerror}") from exc
    cfg = load_config(settings)
    session = Session(_ListingVmm(), cfg)
    state = None
    try:
        state = FileState(printable(path), session, roots=list(cfg.roots), source_path=path)
        chunk = state.load(source)  # a syntax error is an error here too
        limit = settings.file_timeout
        text = f"file timeout exceeded ({format_duration(limit)}) while listing" if limit else ""
        dog = threading.Timer(limit, state.mark_timed_out, args=(text,)) if limit else None
        if dog is not None:
            dog.daemon = True
            dog.start()
        state.deferred.hold()  # boots the top level only asks for are dropped: the chunk runs to its end
        try:
            state.run_chunk(chunk)
            state.deferred.release(boot=False)
        except LuaChunkError as exc:
            if state.timed_out:
                raise LuaChunkError(text) from exc
            if LISTING_REFUSAL not in str(exc):  # a real error at the top level: say so
                raise
            return [TestInfo(m.group(1) if m.group(1) is not None else m.group(2))
                    for m in _TEST_CALL.finditer(source.decode("utf-8", "replace"))]
        finally:
            if dog is not None:
                dog.cancel()
        if state.timed_out:
            raise LuaChunkError(text)
        return [TestInfo(name, meta_map(meta)) for name, meta, _ in state.tests()]
    finally:
        if state is not None:
            state.close()
        session.close()



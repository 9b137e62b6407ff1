"""Everything one test file's Lua world needs: the Lua state, the root lab,
the scopes that own what tests open, and the hooks the runner drives.

The runner calls, in order: `load(source)` (compile), `run_chunk()`, then for
each test `begin_test(name)` ... `run_body()` ... `end_test()`, and finally
`close()`.  The runner owns timing, filtering and events; this class owns the
Lua side of those steps.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import TestFileError
from ..host.lab import Account, Lab, kind_of
from . import json as lua_json
from .binding import Binding
from .convert import lua_type
from .deferboot import HOLDABLE, DeferredBoots
from .errors import LuaApiError
from .lab import LabBinding
from .runtime import LuaEnv

# The host model (VMs, bridges, processes...) and its bindings load on first use:
# a file that makes no VM never imports them, which keeps them off the one-file
# start-up path (issue 13).  An object of a class whose module is not loaded
# cannot exist, so `_loaded` answers isinstance checks without importing.

def _loaded(module: str, *names: str) -> tuple[Any, ...]:
    """The classes `names` of `module` if it is loaded, else none (see above)."""
    mod = sys.modules.get(module)
    return tuple(getattr(mod, n) for n in names) if mod is not None else ()


LUA_IDSIZE = 60  # luaconf.h: the buffer for a chunk's short name, NUL included

# Scope teardown order: what depends on a VM goes before the VM.
CLOSE_ORDER = {"stream": 1, "proc": 2, "file": 3, "worker": 4, "bridge": 5, "vm": 6}


@dataclass
class Scope:
    """Resources opened while one test (or the file's top level) ran."""

    name: str
    items: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, obj: Any) -> None:
        self.items.append((kind, obj))

    def close_all(self) -> list[str]:
        """Close everything (streams, processes, files, workers, bridges, VMs;
        declaration order within a kind); returns the errors, never raises."""
        errors = []
        ordered = sorted(enumerate(self.items), key=lambda p: (CLOSE_ORDER.get(p[1][0], 99), p[0]))
        self.items = []
        for _, (kind, obj) in ordered:
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - teardown must reach every resource
                errors.append(f"closing {kind}: {exc}")
        return errors


class FileState:
    def __init__(self, path: str, session: Any, *, roots: list[str] | None = None,
                 source_path: str | None = None) -> None:
        self.path = path
        self.source_path = os.path.abspath(source_path or path)
        self.session = session
        self.file_config: dict[str, Any] = {}
        self.current_test: str | None = None
        self._timed_out = threading.Event()
        self._timeout_text = "test timeout exceeded"
        self._wake = threading.Event()
        self._bindings: dict[int, tuple[Any, Binding]] = {}
        self._declared_at: dict[str, str] = {}  # test name -> "file:line: " of its test() call
        self._lua_thread = threading.get_ident()
        self.deferred = DeferredBoots(self.fix_positions)  # top-level boots the runner holds
        self.env = LuaEnv(
            timed_out=self._timed_out.is_set,
            timeout_message=lambda: self._timeout_text,
            sleep=self._sleep,
            now=time.monotonic,
            host_wrapper=self._wrap_host,
            before_call=self._before_call,
        )
        lua_json.install(self.env)
        self.account = Account()
        self.root = Lab(session, "provium", account=self.account)
        self.root_binding = self.bind(self.root)
        self.file_scope = Scope("file")
        self.test_scope: Scope | None = None
        self.test_lab: Lab | None = None
        env = self.env
        env.set_global("provium", self.root_binding)
        env.set_global("_PROVIUM_SOURCE_PATH", self.source_path)
        env.set_global("_provium_sleep", env.wrap(self._checked_sleep))
        file_dir = os.path.dirname(self.source_path)
        env.prepend_package_path([file_dir, *(roots or [])])
        session.site_provider = self._site

    # ---- bindings -------------------------------------------------------------------

    def bind(self, obj: Any) -> Binding:
        """The one binding standing for `obj` (VMs and labs keep their identity in Lua)."""
        hit = self._bindings.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        b = self._new_binding(obj)
        if kind_of(obj) is not None:  # lab members (VMs, labs, bridges...) keep their identity
            self._bindings[id(obj)] = (obj, b)
        return b

    def _new_binding(self, obj: Any) -> Binding:
        if isinstance(obj, Lab):  # before the rest: the root lab is bound in every file
            return LabBinding(self, obj)
        # Anything else is a host object, so the host model is loaded already.
        from ..host.bridge import Bridge, Nic
        from ..host.capture import Capture
        from ..host.file import File
        from ..host.process import Process
        from ..host.results import RunResult
        from ..host.streams import Stream
        from ..host.syscalls import PendingSyscall
        from ..host.vm import VM
        from ..host.worker import Worker
        from .net import BridgeBinding, CaptureBinding, NicBinding
        from .objects import (
            FileBinding,
            PendingBinding,
            ProcessBinding,
            RunResultBinding,
            StreamBinding,
            VmBinding,
            WorkerBinding,
        )

        if isinstance(obj, VM):
            return VmBinding(self, obj)
        if isinstance(obj, Bridge):
            return BridgeBinding(self, obj)
        if isinstance(obj, Nic):
            return NicBinding(self, obj)
        if isinstance(obj, Capture):
            return CaptureBinding(self, obj)
        if isinstance(obj, Process):
            return ProcessBinding(self, obj)
        if isinstance(obj, File):
            return FileBinding(self, obj)
        if isinstance(obj, Stream):
            return StreamBinding(self, obj)
        if isinstance(obj, Worker):
            return WorkerBinding(self, obj)
        if isinstance(obj, RunResult):
            return RunResultBinding(self, obj)
        if isinstance(obj, PendingSyscall):
            return PendingBinding(self, obj)
        raise TypeError(f"no Lua binding for {type(obj).__name__}")

    def _wrap_host(self, obj: Any) -> Any:
        if isinstance(obj, _loaded("provium.host.results", "Stat", "DirEntry", "SyscallOutcome", "IoctlOutcome")):
            return self.env.to_lua(obj.as_dict())
        if isinstance(obj, _loaded("provium.host.clock", "Clock")):
            from .objects import ClockBinding

            return ClockBinding(self, obj)
        return self.bind(obj)

    def register(self, kind: str, obj: Any) -> Binding:
        """Hand `obj` to the current scope for closing, and return its binding."""
        scope = self.test_scope if self.test_scope is not None else self.file_scope
        scope.add(kind, obj)
        return self.bind(obj)

    def register_vm(self, vm: Any, lab: Lab) -> Binding:
        """A VM belongs to the scope of the lab it was created in: one made in the
        test's lab (or a sub-lab made there) ends with the test; one made through
        a handle to the file's labs lives until the file ends."""
        in_test = self.test_lab is not None and self.test_lab.contains_lab(lab)
        (self.test_scope if in_test and self.test_scope is not None else self.file_scope).add("vm", vm)
        return self.bind(vm)

    def register_bridge(self, br: Any, lab: Lab) -> Binding:
        """Like a VM, a bridge ends with the scope of the lab it was created in."""
        in_test = self.test_lab is not None and self.test_lab.contains_lab(lab)
        (self.test_scope if in_test and self.test_scope is not None else self.file_scope).add("bridge", br)
        return self.bind(br)

    def warn_once(self, key: str, text: str) -> None:
        """One line on stderr per key per file (e.g. features that only record state)."""
        seen = self.__dict__.setdefault("_warned", set())
        if key not in seen:
            seen.add(key)
            import sys

            print(text, file=sys.stderr)

    def fixture_function(self, key: str) -> Any:
        cached = getattr(self, "_fixture_fns", {})
        if key not in cached:
            from .fixtures import fixture_function

            cached[key] = fixture_function(self, key)
            self._fixture_fns = cached
        return cached[key]

    def fixtures(self) -> Any:
        """This file's fixture resolver (provium.fixtures), made on first use."""
        fx = getattr(self, "_fixtures", None)
        if fx is None:
            from ..fixtures.builder import Fixtures

            fx = Fixtures(self.session, self.session.config, file_path=self.path,
                          should_stop=self._timed_out.is_set)
            self._fixtures = fx
        return fx

    def call_lua(self, fn: Any, *args: Any) -> Any:
        """Call a Lua function from Python (e.g. vm:batch's builder); a Lua error
        propagates as LuaError with its message intact."""
        return fn(*args)

    def caller_dir(self) -> str:
        src = self.env.H.caller_file()
        if src:
            return os.path.dirname(os.path.abspath(src.decode() if isinstance(src, bytes) else src))
        return os.path.dirname(self.source_path)

    def _site(self) -> tuple[tuple[str, int] | None, str | None]:
        if threading.get_ident() != self._lua_thread:
            return None, self.current_test  # the Lua state may only be touched from its own thread
        res = self.env.H.creation_site()
        if isinstance(res, tuple) and len(res) == 2 and res[0] is not None:
            src, line = res
            return (src.decode("utf-8", "replace") if isinstance(src, bytes) else src, int(line)), self.current_test
        return None, self.current_test

    # ---- timeouts -----------------------------------------------------------------

    def _sleep(self, secs: Any) -> None:
        if isinstance(secs, (int, float)) and not isinstance(secs, bool) and secs > 0:
            self._wake.wait(secs)

    def _checked_sleep(self, *a: Any) -> None:
        secs = a[0] if a else None
        if isinstance(secs, bool) or not isinstance(secs, (int, float)) or secs != secs or secs < 0:
            raise LuaApiError(f"_provium_sleep: expected a non-negative number of seconds, got {lua_type(secs)}")
        self._sleep(secs)

    def _before_call(self, label: str | None = None) -> None:
        if self._timed_out.is_set():
            raise LuaApiError(self._timeout_text)
        if self.deferred.pending and label not in HOLDABLE:
            self.deferred.flush()  # the top level uses something a held boot would change

    def caller_where(self) -> str:
        """`file:line: ` of the Lua code calling the current method."""
        where = self.env.H.caller_where()
        return where.decode("utf-8", "replace") if isinstance(where, bytes) else str(where or "")

    def mark_timed_out(self, text: str) -> None:
        """From the watchdog thread: make Lua code stop (hook, sleeps, host calls)."""
        self._timeout_text = text
        self._timed_out.set()
        self._wake.set()
        self.env.interrupter.arm()

    @property
    def timed_out(self) -> bool:
        return self._timed_out.is_set()

    def clear_timeout(self) -> None:
        self._timed_out.clear()
        self._wake.clear()

    # ---- running --------------------------------------------------------------------

    def fix_positions(self, text: str | None) -> str | None:
        """Lua shortens a chunk name longer than 59 bytes to `...` + its last 56
        bytes in every `file:line:` it writes; put the file's full path back."""
        if text is None or len(self.path.encode()) <= LUA_IDSIZE - 1:
            return text
        short = "..." + self.path.encode()[-(LUA_IDSIZE - 4):].decode("utf-8", "replace")
        return text.replace(short, self.path)

    def load(self, source: bytes) -> Any:
        """Compile the file; raises LuaSyntax with Lua's message on a syntax error."""
        res = self.env.H.load_chunk(source, ("@" + self.path).encode())
        if isinstance(res, tuple):
            fn, err = res[0], res[1] if len(res) > 1 else None
        else:
            fn, err = res, None
        if fn is None:
            msg = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            raise LuaChunkError(self.fix_positions(msg))
        return fn

    def run_chunk(self, fn: Any) -> None:
        """Run the file's top level (registers the tests, sets file config)."""
        try:
            ok, err = self._call(fn)
        finally:
            self.env.interrupter.disarm()
        if not ok:
            raise LuaChunkError(self.fix_positions(err))

    def _call(self, fn: Any, *args: Any) -> tuple[bool, str | None]:
        res = self.env.H.call(fn, *args)
        if not isinstance(res, tuple):
            res = (res,)
        ok = bool(res[0])
        err = None
        if not ok:
            e = res[1] if len(res) > 1 else b"error"
            err = e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e)
        return ok, err

    def tests(self) -> list[tuple[str, Any, Any]]:
        """Registered tests in declaration order: (name, meta table, fn)."""
        out = []
        tbl = self.env.H.tests()
        for i in range(1, len(tbl) + 1):
            t = tbl[i]
            name = t[b"name"]
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            where = t[b"where"]
            self._declared_at[text] = where.decode("utf-8", "replace") if isinstance(where, bytes) else ""
            out.append((text, t[b"meta"], t[b"fn"]))
        return out

    def at_declaration(self, name: str, text: str) -> str:
        """`text` as an error raised at test `name`'s declaration (`file:line: text`):
        for what is only checked when the test is about to run, e.g. its meta.timeout."""
        return self.fix_positions(self._declared_at.get(name, "") + text) or text

    def file_skip(self) -> str | None:
        v = self.env.H.file_skip()
        if v is None:
            return None
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    def begin_test(self, name: str, meta: Any) -> Any:
        """Make the test scope (a lab `test:<name>` that falls through to the
        root) the `provium` global and return a fresh `t`."""
        self.current_test = name
        self.test_scope = Scope(name)
        self.test_lab = Lab(self.session, f"test:{name}", parents=[self.root], account=self.account)
        self.env.set_global("provium", self.bind(self.test_lab))
        self.env.H.set_current(name.encode())
        self.env.H.set_scope_tag(b"test")
        return self.env.H.make_t(name.encode(), meta)

    def run_body(self, fn: Any, t: Any) -> tuple[bool, str | None]:
        try:
            res = self.env.H.run_body(fn, t)
        finally:
            self.env.interrupter.disarm()
        if not isinstance(res, tuple):
            res = (res, None)
        ok, err = res[0], res[1] if len(res) > 1 else None
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        return bool(ok), self.fix_positions(err)

    def outcome(self, t: Any) -> tuple[str, str | None, bool, str | None, list[str]]:
        outcome, reason, failed, failed_msg, log = self.env.H.outcome(t)

        def s(v: Any) -> str | None:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else (None if v is None else str(v))

        lines = [s(log[i]) or "" for i in range(1, len(log) + 1)]
        return s(outcome) or "pass", s(reason), bool(failed), self.fix_positions(s(failed_msg)), lines

    def end_test(self) -> list[str]:
        """Close what the test opened, shut its lab down, restore `provium`."""
        self.env.H.set_current(None)
        self.env.interrupter.disarm()
        self.env.interrupter.forget("test")
        self.env.H.forget_threads(b"test")
        self.env.H.set_scope_tag(b"file")
        errors: list[str] = []
        if self.test_scope is not None:
            errors += self.test_scope.close_all()
        if self.test_lab is not None:
            try:
                self.test_lab.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc))
            self._bindings.pop(id(self.test_lab), None)
        self.test_scope = None
        self.test_lab = None
        self.current_test = None
        self.env.set_global("provium", self.root_binding)
        # No full collection here: its cost grows with everything the file holds
        # (every registered test), so one per test made a file's cost quadratic.
        # Lua's own incremental collector keeps up; the file end collects fully.
        return errors

    def close(self) -> list[str]:
        """File end: anything a test left, then the file scope, then every VM."""
        errors: list[str] = []
        if self.test_scope is not None:
            errors += self.end_test()
        errors += self.file_scope.close_all()
        try:
            self.root.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))
        self.env.H.collect_garbage()
        self.env.closed = True  # finalizers that run later get a clear error
        return errors


class LuaChunkError(TestFileError):
    """The file could not be compiled or its top level raised."""

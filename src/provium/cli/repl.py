"""`provium repl`: an interactive Lua prompt with a booted VM bound as `vm`.

The Lua state is the one a test file gets (`FileState`: `provium`, `json`,
`wait_until`, every binding), so what works at the prompt works in a test.

Threads: one thread owns the Lua state and evaluates lines (`_LuaThread`);
the main thread reads input with prompt_toolkit and waits for each result.
Ctrl-C during an evaluation lands in the main thread (Python runs signal
handlers there), which stops the evaluation the way a test timeout does:
blocked host calls are cancelled (`Session.interrupt`) and pure-Lua loops are
stopped by the interrupter's debug hook.  The REPL itself carries on.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import lupa.lua54 as lupa_mod

from ..errors import StateError
from ..lua import failtext
from ..lua.binding import Binding
from ..lua.objects import RunResultBinding

PROMPT = "provium> "
MORE = "     ... "
INTERRUPTED = "interrupted (Ctrl-C)"
MAX_ITEMS = 50  # table entries printed before "..."
MAX_DEPTH = 4


def history_path() -> str:
    home = os.environ.get("HOME")
    return os.path.join(home, ".provium_history") if home else "/tmp/.provium_history"


# ---- showing values ---------------------------------------------------------------------


def show(value: Any, depth: int = 0, seen: set | None = None) -> str:
    """A Lua value as a person wants to read it at a prompt."""
    if value is None:
        return "nil"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        text = f"{value:.14g}"
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, bytes):
        return _show_string(value)
    if isinstance(value, RunResultBinding):
        r = value.host
        fields = [f"status={r.status}", f"exit_code={r.exit_code}"]
        if r.signal is not None:
            fields.append(f"signal={r.signal}")
        fields += [f"stdout={failtext.quote(r.stdout, 500).decode('utf-8', 'replace')}",
                   f"stderr={failtext.quote(r.stderr, 500).decode('utf-8', 'replace')}"]
        return "RunResult{" + ", ".join(fields) + "}"
    if isinstance(value, Binding):
        return str(value)
    kind = lupa_mod.lua_type(value)
    if kind == "table":
        return _show_table(value, depth, seen if seen is not None else set())
    if kind is not None:
        return f"<{kind}>"
    return str(value)


def _show_string(data: bytes) -> str:
    # A multi-line text (a command's output) reads best as it is; one line is quoted
    # so trailing spaces and a missing or extra newline show.
    if data.count(b"\n") > 1 or (b"\n" in data and not data.endswith(b"\n")):
        return data.decode("utf-8", "replace").rstrip("\n")
    return failtext.quote(data, 4000).decode("utf-8", "replace")


def _show_table(tbl: Any, depth: int, seen: set) -> str:
    key = id(tbl)
    if key in seen or depth >= MAX_DEPTH:
        return "{...}"
    seen = seen | {key}
    n = len(tbl)
    parts = []
    count = 0
    for i in range(1, n + 1):
        parts.append(show(tbl[i], depth + 1, seen))
        count += 1
        if count >= MAX_ITEMS:
            return "{" + ", ".join(parts) + ", ...}"
    rest = []
    for k, v in tbl.items():
        if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n:
            continue
        if isinstance(k, bytes) and k.isascii() and k.replace(b"_", b"a").isalnum() and not k[:1].isdigit():
            name = k.decode()
        else:
            name = "[" + show(k, depth + 1, seen) + "]"
        rest.append(f"{name} = {show(v, depth + 1, seen)}")
    rest.sort()
    if count + len(rest) > MAX_ITEMS:
        rest = rest[:MAX_ITEMS - count] + ["..."]
    return "{" + ", ".join(parts + rest) + "}"


# ---- the Lua side -----------------------------------------------------------------------


class Evaluator:
    """Compiles and runs one input at a time in the REPL's Lua state."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.env = state.env

    def compile(self, text: str) -> tuple[Any, str | None, bool]:
        """(function, error, incomplete).  `return <text>` is tried first, so an
        expression prints its value; `incomplete` means wait for more lines."""
        src = text.encode()
        fn, _ = self._load(b"return " + src)
        if fn is not None:
            return fn, None, False
        fn, err = self._load(src)
        if fn is not None:
            return fn, None, False
        incomplete = err is not None and err.endswith("<eof>")
        return None, err, incomplete

    def _load(self, src: bytes) -> tuple[Any, str | None]:
        res = self.env.H.load_chunk(src, b"=repl")
        if isinstance(res, tuple):
            fn, err = res[0], res[1] if len(res) > 1 else None
        else:
            fn, err = res, None
        if fn is None:
            return None, err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
        return fn, None

    def run(self, fn: Any) -> tuple[bool, list[Any] | str]:
        try:
            res = self.env.H.call(fn)
        finally:
            self.env.interrupter.disarm()
        if not isinstance(res, tuple):
            res = (res,)
        if res[0]:
            return True, list(res[1:])
        err = res[1] if len(res) > 1 else b"error"
        return False, err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)


class _LuaThread:
    """Runs every call that touches the Lua state on one thread (lupa states are
    not shared between threads while running, and creation sites need it)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="provium-repl-lua", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box.append((False, exc))
            done.set()

    def call(self, fn: Callable[[], Any], on_interrupt: Callable[[], None] | None = None) -> Any:
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        while not done.is_set():
            try:
                done.wait(0.1)
            except KeyboardInterrupt:
                if on_interrupt is not None:
                    on_interrupt()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(5)


# ---- the prompt -------------------------------------------------------------------------


class Repl:
    def __init__(self, session: Any, *, profile: str, name: str, fixture: str | None = None,
                 out: Callable[[str], None] = print) -> None:
        self.session = session
        self.profile = profile
        self.name = name
        self.fixture = fixture
        self.out = out
        self.lua = _LuaThread()
        self.state: Any = None
        self.evaluator: Evaluator | None = None
        self._leaving = False

    # -- set-up and tear-down ----------------------------------------------------------

    def start(self) -> None:
        def setup() -> Any:
            from ..lua.state import FileState

            st = FileState("repl", self.session)
            st.env.set_global("exit", st.env.wrap(self._bye))
            st.env.set_global("quit", st.env.wrap(self._bye))
            self.state = st
            self.evaluator = Evaluator(st)
            if self.fixture is not None:
                # Built first if the cache has no entry (the same resolver tests use).
                vm = st.fixtures().vm(self.fixture, st.root)
            else:
                vm = st.root.create_vm(self.name, self.profile, None)
            st.env.set_global("vm", st.register_vm(vm, st.root))
            if self.fixture is None:
                vm.boot()
            return vm

        if self.fixture is not None:
            self.out(f"provium repl — restoring fixture `{self.fixture}`")
        else:
            self.out(f"provium repl — booting VM `{self.name}` (profile `{self.profile}`)")
        vm = self.lua.call(setup, self._interrupt)
        self.out(f"  ready: cid={vm.cid} state={vm.state}")
        self.out("  `vm` is the VM; also `provium`, `json`, `wait_until`. Ctrl-C stops a call, Ctrl-D leaves.")

    def _bye(self, *a: Any) -> None:
        # Unwind the Lua call; `evaluate` sees the flag and leaves.
        self._leaving = True
        raise StateError("leaving the REPL")

    def close(self) -> None:
        if self.state is not None:
            with contextlib.suppress(Exception):  # leaving anyway
                self.lua.call(self.state.close)
        self.lua.stop()

    # -- one input -------------------------------------------------------------------

    def _interrupt(self) -> None:
        if self.state is not None:
            self.state.mark_timed_out(INTERRUPTED)
        self.session.interrupt("Ctrl-C")

    def evaluate(self, text: str) -> bool | None:
        """Run one complete input and print its values or its error.  Returns None
        if the input is incomplete (more lines needed), False to leave."""
        assert self.evaluator is not None
        ev = self.evaluator
        fn, err, incomplete = self.lua.call(lambda: ev.compile(text))
        if fn is None:
            if incomplete:
                return None
            self.out(f"error: {err}")
            return True

        def run() -> tuple[bool, Any, list[str]]:
            ok, values = ev.run(fn)
            # Values are read here, on the Lua thread.
            shown = [show(v) for v in values] if ok and isinstance(values, list) else []
            return ok, values, shown

        try:
            ok, values, shown = self.lua.call(run, self._interrupt)
        finally:
            if self.state is not None:
                self.state.clear_timeout()
        if not ok:
            if self._leaving:
                return False
            self.out(f"error: {values}")
            return True
        for line in shown:
            self.out(line)
        return True

    def complete_names(self) -> list[str]:
        """Globals and `obj:method` words for tab completion."""
        from ..lua.stubs import bindings

        words = {"vm", "provium", "json", "test", "wait_until", "exit", "quit"}
        for b in bindings():
            for m in b.LUA_METHODS:
                words.add(m)
        return sorted(words)


def loop(repl: Repl) -> int:
    """Read-eval-print until Ctrl-D or exit(); the caller shuts everything down."""
    read = _reader(repl)
    buf: list[str] = []
    while True:
        try:
            line = read(MORE if buf else PROMPT)
        except KeyboardInterrupt:
            buf = []  # Ctrl-C at the prompt drops the line
            continue
        except EOFError:
            repl.out("bye")
            return 0
        buf.append(line)
        text = "\n".join(buf)
        if not text.strip():
            buf = []
            continue
        try:
            res = repl.evaluate(text)
        except KeyboardInterrupt:
            repl.out(f"error: {INTERRUPTED}")
            res = True
        if res is None:
            continue
        buf = []
        if res is False:
            repl.out("bye")
            return 0


def _reader(repl: Repl) -> Callable[[str], str]:
    if not sys.stdin.isatty():
        def plain(prompt: str) -> str:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")

        return plain
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory

    words = repl.complete_names()
    session: PromptSession = PromptSession(
        history=FileHistory(history_path()),
        completer=WordCompleter(words),
    )
    return lambda prompt: session.prompt(prompt)

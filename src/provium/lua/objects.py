"""Lua bindings of a VM and of what runs inside it: RunResult, Process, File,
streams, Worker, Clock, pending syscalls and the batch builder.

Each method only translates: Lua values in (checking types and naming the
argument when they are wrong), a call into `provium.host`, the result out.
Resources a test opens (processes, files, streams, workers) are registered
with the current scope so the runner closes them when the test (or the file)
ends.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..host.errors import ArgumentError
from ..host.results import RunResult
from .args import Args
from .binding import Binding, Multi, method
from .disk import DiskBinding
from .convert import is_table, key_text, lua_type, text, to_py
from .errors import LuaApiError

if TYPE_CHECKING:
    from .state import FileState

RUN_OPT_KEYS = ("args", "env", "env_clear", "cwd", "stdin", "timeout", "timeout_ms")


def run_call(method_name: str, args: Args) -> tuple[str, dict | None]:
    """Lua's run forms: `run("sh line")`, `run(prog, {"a", "b"})` (direct exec;
    `{}` = no arguments), `run(prog, {args=..., env=..., cwd=..., stdin=..., timeout=...})`
    (without `args` the string still runs through `sh -c`)."""
    cmd = args.get(1)
    if cmd is None:
        raise LuaApiError(f"{method_name} expects at least a command string")
    if not isinstance(cmd, (bytes, str)):
        raise LuaApiError(f"{method_name}: first argument must be a string, got {lua_type(cmd)}")
    cmd = text(cmd, f"{method_name}: the command")
    second = args.get(2)
    if second is None:
        return cmd, None
    if not is_table(second):
        raise LuaApiError(f"{method_name}: second argument must be a table, got {lua_type(second)}")
    positional, named = [], {}
    for k, v in second.items():
        name = key_text(k)
        if name is not None:
            named[name] = v
        else:
            positional.append((k, v))
    if named:
        if positional:
            raise LuaApiError(f"{method_name}: give the arguments either as a plain array or as `args=`, "
                              "not both in one table")
        return cmd, to_py(second)
    # A plain array: direct exec with these arguments.
    n = len(second)
    if sorted(k for k, _ in positional) != list(range(1, n + 1)):
        raise LuaApiError(f"{method_name}: the argument array must be a sequence of strings (1..n, no holes)")
    argv = []
    for i in range(1, n + 1):
        v = second[i]
        if not isinstance(v, (bytes, str)):
            raise LuaApiError(f"{method_name}: argument array entry [{i}] must be a string, got {lua_type(v)}")
        argv.append(text(v, f"{method_name}: argument [{i}]"))
    return cmd, {"args": argv}


def _opts(method_name: str, args: Args, i: int, name: str = "opts") -> dict | None:
    v = args.get(i)
    if v is None:
        return None
    if not is_table(v):
        raise LuaApiError(f"{method_name}: argument #{i} ({name}) must be a table, got {lua_type(v)}")
    return to_py(v, empty="dict")


class VmBinding(Binding):
    KIND = "vm"

    def __init__(self, state: "FileState", vm: Any) -> None:
        super().__init__(state)
        self.host = vm

    def __str__(self) -> str:
        return str(self.host)

    # ---- lifecycle ----------------------------------------------------------------

    @method()
    def boot(self, *a: Any) -> Any:
        args = Args("vm:boot", a, max_args=1)
        opts = _opts("vm:boot", args, 1)
        held = self._state.deferred
        if held.is_pending(self.host):
            held.flush()  # booting it twice: the second boot fails as it did when boots were immediate
        elif held.holding and self.host.state == "created":
            self.host.check_boot(opts)  # what the boot would refuse at once, it refuses here
            held.add(self._state.caller_where(), lambda: self.host.boot(opts), self.host)
            return self
        self.host.boot(opts)
        return self

    @method()
    def shutdown(self, *a: Any) -> None:
        Args("vm:shutdown", a, max_args=0)
        self.host.shutdown()

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()

    @method()
    def pause(self, *a: Any) -> None:
        self.host.pause()

    @method()
    def resume(self, *a: Any) -> None:
        self.host.resume()

    @method()
    def reset(self, *a: Any) -> None:
        self.host.reset()

    @method()
    def power_button(self, *a: Any) -> None:
        args = Args("vm:power_button", a, max_args=1)
        self.host.power_button(to_py(args.get(1)))

    @method()
    def wakeup(self, *a: Any) -> None:
        self.host.wakeup()

    @method()
    def snapshot(self, *a: Any) -> Any:
        from .snapshots import SnapshotBinding

        path = Args("vm:snapshot", a, max_args=1).string(1, "path", optional=True)
        return SnapshotBinding(self._state, self.host.snapshot(path))

    @method()
    def restore(self, *a: Any) -> None:
        from .snapshots import vm_restore_source

        args = Args("vm:restore", a, max_args=1)
        self.host.restore(vm_restore_source(args.get(1)))

    # ---- accessors ----------------------------------------------------------------

    @method()
    def name(self, *a: Any) -> str:
        return self.host.name

    @method()
    def profile(self, *a: Any) -> str:
        return self.host.profile

    @method()
    def state(self, *a: Any) -> str:
        return self.host.state.public

    @method()
    def cid(self, *a: Any) -> int | None:
        return self.host.cid

    @method()
    def is_quiescent(self, *a: Any) -> bool:
        return self.host.is_quiescent()

    @method()
    def open_file_count(self, *a: Any) -> int:
        return self.host.open_file_count()

    @method()
    def open_stream_count(self, *a: Any) -> int:
        return self.host.open_stream_count()

    # ---- commands -----------------------------------------------------------------

    @method()
    def run(self, *a: Any) -> Any:
        cmd, opts = run_call("vm:run", Args("vm:run", a, max_args=2))
        return self.host.run(cmd, opts)

    @method()
    def run_async(self, *a: Any) -> Any:
        cmd, opts = run_call("vm:run_async", Args("vm:run_async", a, max_args=2))
        proc = self.host.run_async(cmd, opts)
        return self._state.register("proc", proc)

    # ---- systemd guests ------------------------------------------------------------

    @method()
    def wait_unit(self, *a: Any) -> None:
        args = Args("vm:wait_unit", a, max_args=2)
        self.host.wait_unit(args.string(1, "unit"), _opts("vm:wait_unit", args, 2))

    @method()
    def journal(self, *a: Any) -> str:
        args = Args("vm:journal", a, max_args=2)
        if is_table(args.get(1)):  # vm:journal({lines = 10}): the whole journal
            return self.host.journal(None, _opts("vm:journal", args, 1))
        return self.host.journal(args.string(1, "unit", optional=True), _opts("vm:journal", args, 2))

    # ---- files --------------------------------------------------------------------

    @method()
    def read_file(self, *a: Any) -> bytes:
        args = Args("vm:read_file", a, max_args=1)
        return self.host.read_file(args.string(1, "path"))

    @method()
    def write_file(self, *a: Any) -> None:
        args = Args("vm:write_file", a, max_args=3)
        self.host.write_file(args.string(1, "path"), args.data(2, "data"), _opts("vm:write_file", args, 3))

    @method()
    def push_file(self, *a: Any) -> None:
        args = Args("vm:push_file", a, max_args=3)
        host_path = args.string(1, "host_path")
        guest_path = args.string(2, "guest_path")
        _opts("vm:push_file", args, 3)  # `{auto_dep=false}` is read by the fixture key scanner, not here
        if not os.path.isabs(host_path):
            host_path = os.path.join(self._state.caller_dir(), host_path)
        self.host.push_file(host_path, guest_path)

    @method()
    def stat(self, *a: Any) -> dict:
        args = Args("vm:stat", a, max_args=2)
        return self.host.stat(args.string(1, "path"), _opts("vm:stat", args, 2)).as_dict()

    @method()
    def listdir(self, *a: Any) -> list:
        args = Args("vm:listdir", a, max_args=1)
        return [e.as_dict() for e in self.host.listdir(args.string(1, "path"))]

    @method()
    def mkdir(self, *a: Any) -> None:
        args = Args("vm:mkdir", a, max_args=2)
        self.host.mkdir(args.string(1, "path"), _opts("vm:mkdir", args, 2))

    @method()
    def unlink(self, *a: Any) -> None:
        args = Args("vm:unlink", a, max_args=1)
        self.host.unlink(args.string(1, "path"))

    @method()
    def rename(self, *a: Any) -> None:
        args = Args("vm:rename", a, max_args=2)
        self.host.rename(args.string(1, "from"), args.string(2, "to"))

    @method()
    def open_file(self, *a: Any) -> Any:
        args = Args("vm:open_file", a, max_args=2)
        path = args.string(1, "path")
        mode = args.table(2, "mode")
        f = self.host.open_file(path, to_py(mode, empty="dict"))
        return self._state.register("file", f)

    @method()
    def tail_file(self, *a: Any) -> Any:
        args = Args("vm:tail_file", a, max_args=2)
        path = args.get(1)
        if not isinstance(path, (bytes, str)):
            raise LuaApiError(f"vm:tail_file: first arg must be a path string, got {lua_type(path)}")
        opts = args.get(2)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"vm:tail_file: second arg must be opts table, got {lua_type(opts)}")
        tail = self.host.tail_file(text(path, "vm:tail_file: path"), to_py(opts, empty="dict"))
        return self._state.register("stream", tail)

    @method()
    def fd_stream(self, *a: Any) -> Any:
        args = Args("vm:fd_stream", a, max_args=1)
        v = args.get(1)
        if isinstance(v, FileBinding):
            target = v.host
        elif isinstance(v, Binding):
            raise LuaApiError("vm:fd_stream expected a File userdata or integer fd")
        else:
            target = v
        tail = self.host.fd_stream(target)
        return self._state.register("stream", tail)

    # ---- layer 0 ------------------------------------------------------------------

    @method()
    def syscall(self, *a: Any) -> Any:
        if not a:
            raise LuaApiError("syscall(nr, ...): missing nr")
        return self.host.syscall(*[to_py(v, empty="dict") for v in a])

    @method()
    def syscall_async(self, *a: Any) -> Any:
        if not a:
            raise LuaApiError("syscall_async(nr, ...): missing nr")
        return PendingBinding(self._state, self.host.syscall_async(*[to_py(v, empty="dict") for v in a]))

    @method()
    def ioctl(self, *a: Any) -> Any:
        args = Args("vm:ioctl", a, max_args=4)
        fd = args.get(1)
        if isinstance(fd, FileBinding):
            fd = fd.host
        data = args.get(3)
        if data is not None and not isinstance(data, (bytes, str)):
            data = None  # the reference passes an empty buffer for a non-string
        return self.host.ioctl(fd, args.get(2), data, _opts("vm:ioctl", args, 4))

    @method()
    def read_mem(self, *a: Any) -> Multi:
        args = Args("vm:read_mem", a, max_args=2)
        data, errno = self.host.read_mem(args.integer(1, "addr"), args.integer(2, "len"))
        return Multi((data, errno))

    # ---- the rest -----------------------------------------------------------------

    @method()
    def clock(self, *a: Any) -> Any:
        return ClockBinding(self._state, self.host.clock())

    @method()
    def spawn_worker(self, *a: Any) -> Any:
        args = Args("vm:spawn_worker", a, max_args=1)
        w = self.host.spawn_worker(_opts("vm:spawn_worker", args, 1))
        return self._state.register("worker", w)

    @method()
    def batch(self, *a: Any) -> list:
        args = Args("vm:batch", a, max_args=1)
        fn = args.function(1, "fn")
        state = self._state

        def call(builder: Any) -> None:
            state.call_lua(fn, BatchBinding(state, builder))

        return self.host.batch(call)

    @method()
    def console(self, *a: Any) -> Any:
        Args("vm:console", a, max_args=0)
        return ConsoleBinding(self._state, self.host.console())

    @method()
    def nic(self, *a: Any) -> Any:
        from ..host.bridge import nic_of

        args = Args("vm:nic", a, max_args=1)
        return self._state.bind(nic_of(self.host, args.string(1, "name")))

    @method()
    def disk(self, *a: Any) -> Any:
        args = Args("vm:disk", a, max_args=1)
        return DiskBinding(self._state, self.host.disk(to_py(args.get(1))))

    @method()
    def attach_disk(self, *a: Any) -> Any:
        args = Args("vm:attach_disk", a, max_args=1)
        return DiskBinding(self._state, self.host.attach_disk(_opts("vm:attach_disk", args, 1)))


class RunResultBinding(Binding):
    KIND = "RunResult"
    FIELDS = ("exit_code", "stdout", "stderr", "status", "timed_out", "signal")

    def __init__(self, state: Any, result: RunResult) -> None:
        super().__init__(state)
        self.host = result

    def lua_index(self, key: str) -> Any:
        if key in self.FIELDS:
            return getattr(self.host, key)
        raise LuaApiError(f"RunResult: no field or method `{key}` "
                          f"(fields: {', '.join(self.FIELDS)}; methods: ok, assert_ok)")

    def lua_newindex(self, key: str, value: Any) -> None:
        raise LuaApiError(f"RunResult: fields are read-only (cannot set `{key}`)")

    @method()
    def ok(self, *a: Any) -> bool:
        return self.host.ok()

    @method()
    def assert_ok(self, *a: Any) -> None:
        self.host.assert_ok()

    def __str__(self) -> str:
        return str(self.host)


class ProcessBinding(Binding):
    KIND = "proc"

    def __init__(self, state: Any, proc: Any) -> None:
        super().__init__(state)
        self.host = proc

    def __str__(self) -> str:
        return f"process(proc#{self.host.handle()})"

    @method()
    def wait(self, *a: Any) -> Any:
        args = Args("proc:wait", a, max_args=1)
        return self.host.wait(to_py(args.get(1)))

    @method()
    def kill(self, *a: Any) -> None:
        args = Args("proc:kill", a, max_args=1)
        sig = to_py(args.get(1))
        if isinstance(sig, float):
            raise LuaApiError("kill: signal must be int or string, got number (a float)")
        self.host.kill(sig)

    @method()
    def signal(self, *a: Any) -> None:
        args = Args("proc:signal", a, max_args=1)
        sig = to_py(args.get(1))
        if isinstance(sig, float):
            raise LuaApiError("proc:signal: signal must be int or string, got number (a float)")
        self.host.signal(sig)

    @method()
    def pid(self, *a: Any) -> int:
        return self.host.pid()

    @method()
    def handle(self, *a: Any) -> int:
        return self.host.handle()

    @method()
    def status(self, *a: Any) -> str:
        return self.host.status()

    @method()
    def stdin_write(self, *a: Any) -> int:
        args = Args("proc:stdin_write", a, max_args=1)
        return self.host.stdin_write(args.data(1, "data"))

    @method()
    def close_stdin(self, *a: Any) -> None:
        self.host.close_stdin()

    @method()
    def stdout_stream(self, *a: Any) -> Any:
        return self._state.register("stream", self.host.stdout_stream())

    @method()
    def stderr_stream(self, *a: Any) -> Any:
        return self._state.register("stream", self.host.stderr_stream())

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()


class FileBinding(Binding):
    KIND = "file"

    def __init__(self, state: Any, f: Any) -> None:
        super().__init__(state)
        self.host = f

    def __str__(self) -> str:
        return "file(closed)" if self.host.closed else f"file(file#{self.host.fd()})"

    @method()
    def read(self, *a: Any) -> bytes:
        args = Args("file:read", a, max_args=1)
        return self.host.read(args.integer(1, "n"))

    @method()
    def read_all(self, *a: Any) -> bytes:
        return self.host.read_all()

    @method()
    def write(self, *a: Any) -> int:
        args = Args("file:write", a, max_args=1)
        return self.host.write(args.data(1, "data"))

    @method()
    def seek(self, *a: Any) -> int:
        args = Args("file:seek", a, max_args=2)
        offset = args.integer(1, "offset")
        whence = args.string(2, "whence", optional=True)
        return self.host.seek(offset, whence)

    @method()
    def tell(self, *a: Any) -> int:
        return self.host.tell()

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()

    @method()
    def fd(self, *a: Any) -> int:
        return self.host.fd()

    @method()
    def tail_stream(self, *a: Any) -> Any:
        return self._state.register("stream", self.host.tail_stream())


class StreamBinding(Binding):
    KIND = "stream"

    def __init__(self, state: Any, stream: Any) -> None:
        super().__init__(state)
        self.host = stream

    def __str__(self) -> str:
        return repr(self.host)

    @method()
    def next(self, *a: Any) -> bytes | None:
        args = Args("stream:next", a, max_args=1)
        return self.host.next(to_py(args.get(1)))

    @method()
    def read_until(self, *a: Any) -> bytes:
        args = Args("stream:read_until", a, max_args=2)
        return self.host.read_until(args.data(1, "pattern"), to_py(args.get(2)))

    @method()
    def expect(self, *a: Any) -> None:
        args = Args("stream:expect", a, max_args=2)
        self.host.expect(args.data(1, "pattern"), to_py(args.get(2)))

    @method()
    def drain(self, *a: Any) -> list:
        args = Args("stream:drain", a, max_args=1)
        return self.host.drain(to_py(args.get(1)))

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()

    @method()
    def eof(self, *a: Any) -> bool:
        return self.host.eof()

    @method()
    def creation_site(self, *a: Any) -> dict | None:
        site = self.host.creation_site()
        if site is None:
            return None
        return {"file": site[0], "line": site[1]}


class ConsoleBinding(Binding):
    """`vm:console()`; not a scope resource (closing it releases nothing)."""

    KIND = "console"

    def __init__(self, state: Any, console: Any) -> None:
        super().__init__(state)
        self.host = console

    @method()
    def read(self, *a: Any) -> Any:
        Args("console:read", a, max_args=0)
        return self._state.register("stream", self.host.read())

    @method()
    def read_log(self, *a: Any) -> bytes:
        Args("console:read_log", a, max_args=0)
        return self.host.read_log()

    @method()
    def expect(self, *a: Any) -> Any:
        args = Args("console:expect", a, max_args=2)
        return self.host.expect(args.data(1, "pattern"), to_py(args.get(2)))

    @method()
    def write(self, *a: Any) -> None:
        args = Args("console:write", a, max_args=2)
        self.host.write(args.data(1, "data"), _opts("console:write", args, 2))

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()


class WorkerBinding(Binding):
    KIND = "worker"

    def __init__(self, state: Any, worker: Any) -> None:
        super().__init__(state)
        self.host = worker

    def __str__(self) -> str:
        return repr(self.host)

    @method()
    def run(self, *a: Any) -> Any:
        cmd, opts = run_call("worker:run", Args("worker:run", a, max_args=2))
        return self.host.run(cmd, opts)

    @method()
    def run_async(self, *a: Any) -> Any:
        cmd, opts = run_call("worker:run_async", Args("worker:run_async", a, max_args=2))
        return self._state.register("proc", self.host.run_async(cmd, opts))

    @method()
    def open_file(self, *a: Any) -> Any:
        args = Args("worker:open_file", a, max_args=2)
        path = args.string(1, "path")
        mode = args.table(2, "mode")
        return self._state.register("file", self.host.open_file(path, to_py(mode, empty="dict")))

    @method()
    def syscall(self, *a: Any) -> Any:
        if not a:
            raise LuaApiError("worker:syscall(nr, ...): missing nr")
        return self.host.syscall(*[to_py(v, empty="dict") for v in a])

    @method()
    def syscall_async(self, *a: Any) -> Any:
        if not a:
            raise LuaApiError("worker:syscall_async(nr, ...): missing nr")
        return PendingBinding(self._state, self.host.syscall_async(*[to_py(v, empty="dict") for v in a]))

    @method()
    def kill(self, *a: Any) -> None:
        args = Args("worker:kill", a, max_args=1)
        sig = to_py(args.get(1))
        if isinstance(sig, float):
            raise LuaApiError("worker:kill: signal must be int or string, got number (a float)")
        self.host.kill(sig)

    @method()
    def join(self, *a: Any) -> int:
        args = Args("worker:join", a, max_args=1)
        return self.host.join(to_py(args.get(1)))

    @method()
    def handle(self, *a: Any) -> int:
        return self.host.handle()

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()


class ClockBinding(Binding):
    KIND = "clock"

    def __init__(self, state: Any, clock: Any) -> None:
        super().__init__(state)
        self.host = clock

    def __str__(self) -> str:
        return repr(self.host)

    @method()
    def get(self, *a: Any) -> float:
        return self.host.get()

    @method()
    def get_ns(self, *a: Any) -> int:
        return self.host.get_ns()

    @method()
    def set(self, *a: Any) -> None:
        args = Args("clock:set", a, max_args=1)
        self.host.set(args.number(1, "seconds"))

    @method()
    def set_ns(self, *a: Any) -> None:
        args = Args("clock:set_ns", a, max_args=1)
        self.host.set_ns(args.integer(1, "ns"))

    @method()
    def sleep(self, *a: Any) -> None:
        args = Args("clock:sleep", a, max_args=1)
        self.host.sleep(to_py(args.get(1)))

    @method()
    def advance(self, *a: Any) -> None:
        args = Args("clock:advance", a, max_args=1)
        v = to_py(args.get(1))
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, str))):
            raise LuaApiError(f"clock:advance: expected number|string, got {lua_type(args.get(1))}")
        self.host.advance(v)


class PendingBinding(Binding):
    KIND = "pending_syscall"

    def __init__(self, state: Any, pending: Any) -> None:
        super().__init__(state)
        self.host = pending

    @method("await")
    def await_(self, *a: Any) -> Any:
        return self.host.await_()


class BatchBinding(Binding):
    """The `b` given to `vm:batch(function(b) ... end)`; each method queues one op."""

    KIND = "batch"

    def __init__(self, state: Any, builder: Any) -> None:
        super().__init__(state)
        self.host = builder

    @method()
    def run(self, *a: Any) -> None:
        cmd, opts = run_call("batch:run", Args("batch:run", a, max_args=2))
        self.host.run(cmd, opts)

    @method()
    def read_file(self, *a: Any) -> None:
        self.host.read_file(Args("batch:read_file", a, max_args=1).string(1, "path"))

    @method()
    def write_file(self, *a: Any) -> None:
        args = Args("batch:write_file", a, max_args=2)
        self.host.write_file(args.string(1, "path"), args.data(2, "data"))

    @method()
    def stat(self, *a: Any) -> None:
        self.host.stat(Args("batch:stat", a, max_args=1).string(1, "path"))

    @method()
    def listdir(self, *a: Any) -> None:
        self.host.listdir(Args("batch:listdir", a, max_args=1).string(1, "path"))

    @method()
    def mkdir(self, *a: Any) -> None:
        args = Args("batch:mkdir", a, max_args=2)
        opts = args.get(2)
        self.host.mkdir(args.string(1, "path"), opts if isinstance(opts, bool) else to_py(opts, empty="dict"))

    @method()
    def unlink(self, *a: Any) -> None:
        self.host.unlink(Args("batch:unlink", a, max_args=1).string(1, "path"))

    @method()
    def rename(self, *a: Any) -> None:
        args = Args("batch:rename", a, max_args=2)
        self.host.rename(args.string(1, "from"), args.string(2, "to"))

    @method()
    def syscall(self, *a: Any) -> None:
        if not a:
            raise LuaApiError("batch:syscall(nr, ...): missing nr")
        if any(is_table(v) for v in a[1:]):
            raise ArgumentError("batch:syscall does not support the {args=, bufs=, ptrs=} table form; use "
                                "vm:syscall outside the batch, or pass bare integer args here")
        self.host.syscall(*[to_py(v) for v in a])

"""The VM: lifecycle state machine and every guest operation.

A VM drives its guest only through `provium.vmm.base` (launch, then the
instance's controls and its connected `MuxClient`), so the same code serves
QEMU and the local backend.  State changes happen on the session's loop
thread; guest ops check the state first and a broken agent connection moves
the VM to `dead`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError
from ..protocol.messages import (
    BatchOpArgs,
    FdStreamArgs,
    HostMessage,
    IoctlArgs,
    ListdirArgs,
    MkdirArgs,
    OpenFileArgs,
    ReadFileArgs,
    ReadMemArgs,
    RenameArgs,
    SpawnWorkerArgs,
    StatArgs,
    TailFileArgs,
    UnlinkArgs,
    WaitArgs,
    KillArgs,
    WriteFileArgs,
)
from ..errors import requires
from ..log import timed, vm_logger
from ..protocol.mux import ClientError
from ..protocol.types import OpResult, TailStart, WriteFileMode
from ..vmm.base import Unimplemented, VmInstance, VmSpec
from .pynames import python_names
from . import bridge as net
from . import console as console_mod
from . import shares
from .agent_errors import client_error, os_error, os_error_text, vmm_text  # noqa: F401  (os_error*: re-exported)
from .bootopts import BootOpts, make_spec, parse_boot_opts
from .pool import ProfileBuildFailed
from . import disksnap  # noqa: F401  (registers the disks' part of snapshots)
from . import netsnap  # noqa: F401  (registers the NICs and bridges part of snapshots)
from .disk import Disk, DiskError, VmDisks
from .errors import (
    AgentCommError,
    AgentGone,
    NoAgent,
    ArgumentError,
    GuestOsError,
    HandleError,
    ProviumError,
    SessionError,
    VmError,
    VmmFailure,
    WrongState,
)
from .execargs import build_command, to_bytes
from .file import File, parse_open_mode
from .options import check_keys, merge_kw, path_arg, perm_arg
from .process import Process
from .registry import Registry, ResourceMeta
from .states import RUNNING, VmState
from .results import DirEntry, IoctlOutcome, RunResult, Stat, SyscallOutcome, entry_name
from .streams import Tail
from .syscalls import PendingSyscall, build_syscall, future_collector, outcome, to_i64
from .values import parse_duration, type_name

READ_FILE_LIMIT = 96 << 20
EFBIG = 27
ENOENT = 2
POWER_BUTTON_TIMEOUT = 60.0
STATES = tuple(s.public for s in VmState if s is not VmState.BOOTING)  # what vm:state() can show
WORKER_KEYS = ("uid", "gid", "groups", "thread")

# Kept under their old names for code in flight that imports them from here.
_merge_kw, _path, _perm, _vmm_text = merge_kw, path_arg, perm_arg, vmm_text



@python_names
class VM:
    """One guest.  `state` is a `VmState` (see `host/states.py`).

    Creation does not start anything; `boot()` does.  Every guest op needs the
    VM `booted`; otherwise it raises `WrongState` with the reference's wording,
    e.g. ``vm `web`: VM not booted (cannot run)``.
    """

    def __init__(self, session, name: str, profile_name: str, opts: Mapping | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ArgumentError(f"vm: name must be a non-empty string, got {type_name(name)}")
        if not isinstance(profile_name, str) or not profile_name:
            raise ArgumentError(f"vm `{name}`: profile must be a non-empty string, got {type_name(profile_name)}")
        try:
            self._profile = session.config.profile(profile_name)
        except ConfigError as exc:
            raise VmError(f"vm `{name}`: {exc}") from exc
        self._session = session
        self.name = name
        self.profile = profile_name
        self._opts: BootOpts = parse_boot_opts(opts, f"vm `{name}`")
        self._state = VmState.CREATED
        self._inst: VmInstance | None = None
        self.cid: int | None = None
        self._boot_ns = 0
        self._spec: VmSpec | None = None
        self._registry = Registry()
        self.log = vm_logger(name)
        self._console_hub: Any = None  # host/console.py's connection, made on first use
        self.shutdown_cause: str | None = None  # set when provium itself shut the VM down
        # Bumped whenever the guest's agent state is lost while the VM lives on
        # (reset): handles from before refuse to act instead of hitting a new
        # agent's possibly re-used handle numbers.
        self.generation = 0
        self.disks = VmDisks(self)  # owns the disks' images and NBD servers (host/disk.py)
        session._register(self)

    # ---- accessors ---------------------------------------------------------------

    @property
    def state(self) -> VmState:
        return self._state

    @property
    def memory_bytes(self) -> int | None:
        """Memory of the running VM (None before boot)."""
        return self._spec.memory_bytes if self._spec else None

    @property
    def _live(self) -> VmInstance:
        """The backend instance of a VM that has booted (callers checked the state)."""
        inst = self._inst
        assert inst is not None, f"vm `{self.name}` has no instance in state {self._state}"
        return inst

    @property
    def instance(self):
        """The backend's VmInstance (None before boot): for the lab and console layers."""
        return self._inst

    @property
    def session(self):
        return self._session

    def __repr__(self) -> str:
        return f"vm({self.name} state={self._state} cid={self.cid if self.cid is not None else '-'})"

    __str__ = __repr__

    def open_file_count(self) -> int:
        return self._registry.file_count

    def open_stream_count(self) -> int:
        return self._registry.stream_count

    def is_quiescent(self) -> bool:
        return self._registry.file_count == 0 and self._registry.stream_count == 0

    def open_resources(self) -> tuple[list[ResourceMeta], list[ResourceMeta]]:
        """(open files, open streams), each with kind, detail and creation site."""
        return self._registry.files(), self._registry.streams()

    def console(self) -> console_mod.Console:
        """The guest's serial console (`host/console.py`); never fails, opens nothing."""
        return console_mod.Console(self)

    def console_tail(self, n: int = 4096) -> bytes:
        """The last n bytes of the console (b"" without a console or before boot)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArgumentError(f"vm:console_tail: n must be a non-negative integer, got {n!r}")
        return self._inst.console_tail(n) if self._inst is not None else b""

    # ---- state machine -----------------------------------------------------------

    def _wrong_state(self, action: str) -> WrongState:
        return WrongState(self.name, self._state, action, self.shutdown_cause)

    def _require(self, action: str, allowed: tuple = (VmState.BOOTED,)) -> None:
        """The imperative form of `@requires`, for ops whose action name is data."""
        if self._state not in allowed:
            raise self._wrong_state(action)

    def shut_down_because(self, cause: str) -> None:
        """Shut down (best effort), remembering why for every later refusal."""
        if self._state != VmState.SHUTDOWN:
            self.shutdown_cause = cause
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001 - the cause is what matters from here on
            pass

    def boot(self, opts: Mapping | None = None, **kw: Any) -> "VM":
        """Start the guest; returns self.  `opts` (or keywords: ``boot(memory="1G")``)
        override the creation opts key by key (`files`/`disks` append).  Emits `vm_spawned`."""
        return self._session.run(self.aboot(merge_kw(opts, kw, "VM.boot")))

    def check_boot(self, opts: Mapping | None = None) -> None:
        """Raise what `boot(opts)` would refuse before starting anything (state, options),
        for callers that boot later (the runner holds a file's top-level boots)."""
        self._boot_plan(opts)

    def _boot_plan(self, opts: Mapping | None) -> tuple[BootOpts, Any]:
        if self._state is not VmState.CREATED:
            raise self._wrong_state("merge_boot_opts" if opts else "boot")
        merged = self._opts.merged(parse_boot_opts(opts, f"vm `{self.name}`: boot",
                                                   disk_index=len(self._opts.disks)))
        spec = make_spec(self.name, self._profile, merged, default_memory=self._session.default_memory,
                         default_cpus=self._session.default_cpus)
        return merged, spec

    async def aboot(self, opts: Mapping | None = None) -> "VM":
        """Coroutine form of `boot` (for batch boots on the session loop)."""
        merged, spec = self._boot_plan(opts)
        self._state = VmState.BOOTING
        started = time.monotonic_ns()
        try:
            try:
                await self._session.pool.ensure_built(self._profile)  # the profile's `build`, once per run
                spec.disks = await self.disks.prepare(self._profile, spec.disks)
            except (DiskError, ProfileBuildFailed) as exc:
                raise VmmFailure(f"vm `{self.name}`: boot failed: {exc}") from exc
            spec.nics = net.prepare_boot(self)
            try:
                with timed(self.log, f"boot (profile {self.profile})"):
                    inst = await self._charged_launch(spec)
            except BaseException:
                net.after_shutdown(self)
                raise
        except BaseException:
            await _quiet(self.disks.close())
            if self._state is VmState.BOOTING:
                self._state = VmState.CREATED  # a failed launch can be retried
            raise
        if self._state is not VmState.BOOTING:
            # Shut down (e.g. by Session.close) while we were booting: do not leak it.
            self._session.pool.drop_vm_charge(self)
            await _quiet(inst.shutdown())
            await _quiet(self.disks.close())
            net.after_shutdown(self)
            raise WrongState(self.name, self._state, "boot")
        self._inst = inst
        self._opts = merged
        self._spec = spec
        self._boot_ns = started
        self.cid = inst.cid
        self._state = VmState.BOOTED
        self._session.emit("vm_spawned", vm_name=self.name, profile=self.profile,
                           memory_bytes=spec.memory_bytes, cid=inst.cid)
        await net.after_boot(self)
        if spec.shares:
            await shares.mount_all(self, spec.shares)
        return self

    async def _charged_launch(self, spec) -> Any:
        """Launch while holding the VM's pool charge (host/pool.py: waits for room
        in the pool first); a failed launch gives the charge back."""
        await self._session.pool.take_vm_charge(self, spec)
        try:
            return await self._launch(spec)
        except BaseException:
            self._session.pool.drop_vm_charge(self)
            raise

    async def _launch(self, spec: Any) -> Any:
        try:
            return await self._session.vmm.launch(spec)
        except _TOLD:
            raise
        except ClientError as exc:
            raise AgentCommError(f"vm `{self.name}`: boot failed: {exc}") from exc
        except (ProviumError, OSError, asyncio.TimeoutError) as exc:
            # Our own error types (vmm, image, config, ...) and OS errors are the
            # user's story; anything else is a bug and keeps its traceback.
            raise VmmFailure(f"vm `{self.name}`: boot failed: {vmm_text(exc)}") from exc

    def shutdown(self) -> None:
        """Tear the guest down.  Idempotent; from `created` it only marks the VM
        shut down.  Emits `vm_shutdown` once per booted VM."""
        self._session.run(self.ashutdown())

    async def ashutdown(self) -> None:
        state = self._state
        if state is VmState.SHUTDOWN:
            return
        self._state = VmState.SHUTDOWN
        if state is VmState.CREATED:
            await self.disks.close()  # disks attached before boot
        if state in (VmState.CREATED, VmState.BOOTING):
            return  # a boot in flight sees this and shuts its new guest down
        self._session.pool.drop_vm_charge(self)
        self._registry.clear()
        inst = self._live
        error = None
        await console_mod.aclose_hub(self)
        try:
            with timed(self.log, "shutdown"):
                await inst.shutdown()
        except Exception as exc:
            error = VmmFailure(f"vm `{self.name}`: shutdown: {vmm_text(exc)}")
            error.__cause__ = exc
        await _quiet(self.disks.close())
        net.after_shutdown(self)
        self._session.emit("vm_shutdown", vm_name=self.name, duration_ns=time.monotonic_ns() - self._boot_ns)
        if error is not None:
            raise error

    def close(self) -> None:
        """Shut down unless already shut down; never raises (scope cleanup hook)."""
        if self._state is VmState.SHUTDOWN:
            return
        try:
            self.shutdown()
        except Exception:
            pass

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pause(self) -> None:
        self._session.run(self.apause())

    @requires(VmState.BOOTED, action="pause")
    async def apause(self) -> None:
        with timed(self.log, "pause"):
            await self._control("pause", self._live.pause())
        self._state = VmState.PAUSED

    def resume(self) -> None:
        self._session.run(self.aresume())

    @requires(VmState.PAUSED, action="resume")
    async def aresume(self) -> None:
        with timed(self.log, "resume"):
            await self._control("resume", self._live.resume())
        self._state = VmState.BOOTED

    def reset(self) -> None:
        """Warm reboot; returns once the agent answers again.  Handles opened
        before the reset are gone with the guest's old state."""
        self._session.run(self.areset())

    @requires(VmState.BOOTED, action="reset")
    async def areset(self) -> None:
        with timed(self.log, "reset"):
            await self._control("reset", self._live.reset())
        self._forget_handles()

    def wakeup(self) -> None:
        self._session.run(self.awakeup())

    @requires(VmState.BOOTED, action="wakeup")
    async def awakeup(self) -> None:
        with timed(self.log, "wakeup"):
            await self._control("wakeup", self._live.wakeup())

    def power_button(self, timeout: Any = None) -> None:
        """ACPI power button: waits (default 60 s) for the guest to power off, then
        the VM is `shutdown`.  If it does not, the VM is killed and `dead`."""
        t = parse_duration(timeout, "vm:power_button timeout", allow_none=True)
        self._session.run(self.apower_button(POWER_BUTTON_TIMEOUT if t is None else t))

    @requires(VmState.BOOTED, action="power_button")
    async def apower_button(self, timeout: float = POWER_BUTTON_TIMEOUT) -> None:
        inst = self._live
        try:
            await inst.power_button(timeout)
        except Unimplemented as exc:
            raise VmmFailure(f"vm `{self.name}`: {exc}") from exc
        except Exception as exc:
            self._state = VmState.DEAD
            await _quiet(inst.shutdown())
            await _quiet(self.disks.close())
            raise VmmFailure(f"vm `{self.name}`: power_button: {vmm_text(exc)} (the VM was killed)") from exc
        self._state = VmState.SHUTDOWN
        self._registry.clear()
        await _quiet(inst.shutdown())
        self._session.pool.drop_vm_charge(self)
        await _quiet(self.disks.close())
        net.after_shutdown(self)
        self._session.emit("vm_shutdown", vm_name=self.name, duration_ns=time.monotonic_ns() - self._boot_ns)

    # ---- disks (host/disk.py does the work) --------------------------------------

    def disk(self, disk_id: Any) -> Disk:
        """The disk `disk_id` (from the profile, the boot's `disks`, or attach_disk)."""
        return self.disks.get(disk_id)

    def attach_disk(self, opts: Mapping | None = None, **kw: Any) -> Disk:
        """Attach a disk; hot-plugged into a booted q35 guest.  See `VmDisks.aattach`."""
        return self.disks.attach(_merge_kw(opts, kw, "vm:attach_disk"))

    def _stage_disk(self, spec) -> None:
        """attach_disk on a created VM: the disk joins this VM's boot disks."""
        self._opts.disks.append(spec)

    async def _control(self, action: str, coro) -> None:
        try:
            await coro
        except Unimplemented as exc:
            raise VmmFailure(f"vm `{self.name}`: {exc}") from exc
        except _TOLD:
            raise
        except Exception as exc:
            if not self._live.alive():
                self._state = VmState.DEAD
            raise VmmFailure(f"vm `{self.name}`: {action}: {vmm_text(exc)}") from exc

    # ---- snapshots (logic in host/snapshot.py) -------------------------------------

    def snapshot(self, path: Any = None):
        """Save the guest to `path` (default: a new temp file); returns a `Snapshot`.
        Refused while files or streams are open, naming each."""
        from . import snapshot as snap

        return self._session.run(snap.asnapshot(self, snap.path_arg(path, "vm:snapshot")))

    def restore(self, src: Any) -> None:
        """Resume the guest saved in `src` (a `Snapshot` or a path): a never-booted
        VM starts as that guest; a booted or paused one is rolled back to it (its
        older handles then refuse to act).  The VM is `booted` afterwards."""
        from . import snapshot as snap

        self._session.run(snap.arestore(self, src))

    def boot_spec(self):
        """The VmSpec a boot of this VM would use now (for restores)."""
        if self._spec is not None:
            return self._spec
        return make_spec(self.name, self._profile, self._opts, default_memory=self._session.default_memory,
                         default_cpus=self._session.default_cpus)

    def _mark_dead(self) -> None:
        if self._state in RUNNING:
            self._state = VmState.DEAD

    def _adopt(self, inst, spec, started_ns: int, keep_handles: bool) -> None:
        """Take over a restored instance: the VM is `booted` with the saved guest."""
        if keep_handles:
            self._registry.clear()  # the baseline had none open (a snapshot precondition)
        else:
            self._forget_handles()
        self._inst = inst
        self._spec = spec
        self._boot_ns = started_ns
        self.cid = inst.cid
        self._state = VmState.BOOTED
        self._session.emit("vm_spawned", vm_name=self.name, profile=self.profile,
                           memory_bytes=spec.memory_bytes, cid=inst.cid)

    # ---- the agent channel -------------------------------------------------------

    def _client(self, action: str) -> Any:
        client = self._live.client
        if client is None and not self._profile.inject_agent:
            raise NoAgent(f"vm `{self.name}`: profile `{self.profile}` has `inject_agent = false`: there is no "
                          f"agent in the guest, so `{action}` cannot work (its console and power controls "
                          "still do; see docs/guests.md)")
        return client

    async def _acall(self, op: Any, timeout: float | None = None) -> Any:
        started = time.monotonic()
        client = self._client(op.KIND)
        try:
            reply = await client.call(op, timeout)
            self.log.debug("%s (%.1f ms)", op.KIND, (time.monotonic() - started) * 1000)
            return reply
        except ClientError as exc:
            self.log.debug("%s failed after %.1f ms: %s", op.KIND, (time.monotonic() - started) * 1000, exc)
            raise client_error(exc, self._died) from exc
        except asyncio.TimeoutError:
            raise AgentCommError(f"agent: no answer to `{op.KIND}` within {timeout:g}s") from None

    def _died(self, exc: Exception) -> VmError:
        if self._state is VmState.SHUTDOWN:
            return WrongState(self.name, "shutdown", "continue")
        head, nl, rest = str(exc).partition("\n")
        if self._state in RUNNING:
            self._state = VmState.DEAD
            self.shutdown_cause = self.shutdown_cause or head  # later refusals say why it died
        # The verdict on the first line: a console excerpt may follow it.
        return AgentGone(f"vm `{self.name}`: {head} (the VM is now dead){nl}{rest}")

    def _agent(self, action: str, op: Any, timeout: float | None = None) -> Any:
        """One op round trip from the caller's thread; returns the reply payload."""
        self._require(action)
        return self._session.run(self._acall(op, timeout))

    def _unwrap(self, action: str, res: OpResult) -> Any:
        if res.ok:
            return res.value
        raise os_error(action, res.value)

    def _file_op(self, action: str, op: Any, path: str) -> Any:
        return self._unwrap(f"file:{action} `{path}`", self._agent(action, op))

    def _wait_future(self, fut: concurrent.futures.Future) -> Any:
        """Block on a future started with session.spawn (keeps Interrupted semantics)."""
        async def waiter():
            return await asyncio.wrap_future(fut)

        return self._session.run(waiter())

    def _stream_lost(self, exc: Exception) -> None:
        """A stream's channel broke: EOF if we shut the VM down, else the VM died."""
        if self._state is VmState.SHUTDOWN:
            return
        raise self._died(exc)

    def _background_reap(self, handle: int) -> None:
        """On the loop: SIGTERM + wait a dropped process, ignoring every error."""
        if self._state is not VmState.BOOTED:
            return

        async def reap():
            try:
                await self._live.client.call(KillArgs(handle, 15))
                await self._live.client.call(WaitArgs(handle, 2000))
            except Exception:
                pass

        self._session.background(reap())

    def _forget_handles(self) -> None:
        self._registry.clear()
        self.generation += 1

    def _check_generation(self, generation: int, what: str) -> None:
        if generation != self.generation:
            raise HandleError(f"{what} belongs to vm `{self.name}` from before its reset or restore; the guest "
                              "lost it (open it again)")

    def _meta(self, kind: str, detail: str) -> ResourceMeta:
        site, test = self._session.creation_site()
        return ResourceMeta(kind, detail, site, test)

    def _open_stream(self, kind: str, detail: str, op: Any, what: str) -> Tail:
        self._require(op.KIND)
        meta = self._meta(kind, detail)

        client = self._client(op.KIND)

        async def opener():
            try:
                return await client.open_stream(op)
            except ClientError as exc:
                raise client_error(exc, self._died) from exc

        ack, mux = self._session.run(opener())
        if not ack.ok:
            raise os_error(what, ack.value)
        return Tail(self, mux, meta, what)

    # ---- commands ----------------------------------------------------------------

    def run(self, cmd: Any, opts: Mapping | None = None, **kw: Any) -> RunResult:
        """Run a command to completion.

        `cmd` is a string (run with `sh -c`) or a list (argv, no shell); with a
        string and `args=[...]` the string is the program.  Options: `stdin`,
        `env`, `env_clear`, `cwd`, `timeout` (duration; the agent kills the
        whole process group when it expires and the result says "timed_out"),
        `timeout_ms`.  A program that cannot be started raises `GuestOsError`.
        """
        c = build_command("vm:run", cmd, merge_kw(opts, kw, "vm:run"))
        res = self._agent("run", c.exec_args())
        return RunResult.from_exec(self._unwrap(f"vm:run `{c.cmd}`", res))

    def run_async(self, cmd: Any, opts: Mapping | None = None, **kw: Any) -> Process:
        """Start a command and return its `Process` (no timeout: give it to
        `wait`).  `stdin` bytes, if given, are written and stdin is closed."""
        c = build_command("vm:run_async", cmd, merge_kw(opts, kw, "vm:run_async"), async_=True)
        handle = self._unwrap(f"vm:run_async `{c.cmd}`", self._agent("run_async", c.run_async_args()))
        proc = Process(self, handle)
        if c.stdin is not None:
            proc.stdin_write(c.stdin)
            proc.close_stdin()
        return proc

    # ---- systemd guests (host/systemd.py does the work) ----------------------------

    def wait_unit(self, unit: str, opts: Mapping | None = None, **kw: Any) -> None:
        """Wait until the systemd unit `unit` is active (option `timeout`, default 120 s).
        A unit that fails raises `UnitFailed` quoting its journal; a guest without
        systemd (the `linux` profile) raises `NoSystemd`."""
        from . import systemd

        systemd.wait_unit(self, unit, opts, **kw)

    def journal(self, unit: str | None = None, opts: Mapping | None = None, **kw: Any) -> str:
        """The last `lines` (default 50) lines of `unit`'s journal (of the whole journal
        without a unit), as text.  Needs a systemd guest."""
        from . import systemd

        return systemd.journal(self, unit, opts, **kw)

    # ---- files -------------------------------------------------------------------

    def read_file(self, path: Any) -> bytes:
        """The whole file.  Files over 96 MiB are refused (errno 27): use
        `tail_file` or `open_file` to read them in pieces."""
        p = path_arg(path, "vm:read_file")
        st = self._unwrap(f"vm:read_file `{p}`", self._agent("read_file", StatArgs(p, True)))
        if st.size > READ_FILE_LIMIT and entry_name(st.entry_type) == "file":
            raise GuestOsError(f"vm:read_file `{p}`: {st.size} bytes exceeds 96 MiB limit — use vm:tail_file "
                               "or vm:open_file for chunked reads", errno=EFBIG)
        return self._unwrap(f"vm:read_file `{p}`", self._agent("read_file", ReadFileArgs(p))).data

    def write_file(self, path: Any, data: Any, opts: Mapping | None = None, **kw: Any) -> None:
        """Write a whole file.  Options: `mode` = "replace" (default), "append" or
        "exclusive" (fails with errno 17 if the file exists), `perm` for a new file."""
        p = path_arg(path, "vm:write_file")
        buf = to_bytes(data, "vm:write_file", "data")
        o = merge_kw(opts, kw, "vm:write_file") or {}
        check_keys(o, ("mode", "perm"), "vm:write_file")
        mode = o.get("mode") or "replace"
        if mode not in ("replace", "append", "exclusive"):
            raise ArgumentError(f"vm:write_file: `mode` must be \"replace\", \"append\" or \"exclusive\", got {mode!r}")
        perm = perm_arg(o.get("perm"), "vm:write_file")
        op = WriteFileArgs(p, buf, WriteFileMode(mode), perm)
        self._unwrap(f"vm:write_file `{p}`", self._agent("write_file", op))

    def push_file(self, host_path: Any, guest_path: Any, opts: Mapping | None = None) -> None:
        """Copy a host file into the guest (like write_file; default permissions)."""
        hp = Path(path_arg(host_path, "vm:push_file", "host_path"))
        gp = path_arg(guest_path, "vm:push_file", "guest_path")
        try:
            data = hp.read_bytes()
        except OSError as exc:
            raise ArgumentError(f"vm:push_file: read `{hp.resolve()}` failed: {exc.strerror or exc}") from exc
        self.write_file(gp, data)

    def stat(self, path: Any, opts: Mapping | None = None, **kw: Any) -> Stat:
        """Size, mtime, permission bits and entry type.  Follows symlinks unless
        `follow=False` (then a symlink reports itself: lstat)."""
        p = path_arg(path, "vm:stat")
        o = merge_kw(opts, kw, "vm:stat") or {}
        check_keys(o, ("follow",), "vm:stat")
        follow = o.get("follow", True)
        if follow is None:
            follow = True
        if not isinstance(follow, bool):
            raise ArgumentError(f"vm:stat: `follow` must be a boolean, got {type_name(follow)}")
        md = self._unwrap(f"vm:stat `{p}`", self._agent("stat", StatArgs(p, follow)))
        return Stat(size=md.size, mtime_ns=md.mtime_ns, perm=md.perm & 0o7777, entry_type=entry_name(md.entry_type))

    def exists(self, path: Any) -> bool:
        p = path_arg(path, "vm:exists")
        res = self._agent("stat", StatArgs(p, True))
        if res.ok:
            return True
        if res.value.errno in (ENOENT, 20):  # ENOTDIR: a path component is a file
            return False
        raise os_error(f"vm:exists `{p}`", res.value)

    def listdir(self, path: Any) -> list[DirEntry]:
        p = path_arg(path, "vm:listdir")
        entries = self._unwrap(f"vm:listdir `{p}`", self._agent("listdir", ListdirArgs(p)))
        return [DirEntry(e.name, entry_name(e.entry_type)) for e in entries]

    def mkdir(self, path: Any, opts: Mapping | bool | None = None, **kw: Any) -> None:
        """Options: `parents` (like mkdir -p; a bare bool means this too), `perm`."""
        p = path_arg(path, "vm:mkdir")
        if isinstance(opts, bool):
            opts = {"parents": opts}
        o = merge_kw(opts, kw, "vm:mkdir") or {}
        check_keys(o, ("parents", "perm"), "vm:mkdir")
        parents = o.get("parents", False)
        if parents is None:
            parents = False
        if not isinstance(parents, bool):
            raise ArgumentError(f"vm:mkdir: `parents` must be a boolean, got {type_name(parents)}")
        perm = perm_arg(o.get("perm"), "vm:mkdir")
        self._unwrap(f"vm:mkdir `{p}`", self._agent("mkdir", MkdirArgs(p, parents, perm)))

    def unlink(self, path: Any) -> None:
        """Remove a file or an empty directory."""
        p = path_arg(path, "vm:unlink")
        self._unwrap(f"vm:unlink `{p}`", self._agent("unlink", UnlinkArgs(p)))

    def rename(self, src: Any, dst: Any) -> None:
        a = path_arg(src, "vm:rename", "from")
        b = path_arg(dst, "vm:rename", "to")
        self._unwrap(f"vm:rename `{a}` -> `{b}`", self._agent("rename", RenameArgs(a, b)))

    def open_file(self, path: Any, mode: Any) -> File:
        """Open a guest file.  `mode` is a table of booleans (`read`, `write`,
        `create`, `truncate`, `append`, `exclusive`, plus `perm`) or a Python
        mode string ("r", "w", "a", "x", with "+")."""
        p = path_arg(path, "vm:open_file")
        flags, perm = parse_open_mode(mode)
        meta = self._meta("open_file", f'"{p}"')
        handle = self._unwrap(f"vm:open_file `{p}`", self._agent("open_file", OpenFileArgs(p, flags, perm)))
        self._registry.add_file(handle, meta)
        return File(self, handle, p)

    def tail_file(self, path: Any, opts: Mapping | None = None, **kw: Any) -> Tail:
        """Follow a file.  `start` (alias `from`): "end" (default: only new bytes),
        "beginning"/"start", a byte offset, or a negative number = that many bytes
        before the current end."""
        p = path_arg(path, "vm:tail_file")
        if opts is not None and not isinstance(opts, Mapping):
            raise ArgumentError(f"vm:tail_file: second arg must be opts table, got {type_name(opts)}")
        o = merge_kw(opts, kw, "vm:tail_file") or {}
        check_keys(o, ("start", "from"), "vm:tail_file")
        if "start" in o and "from" in o:
            raise ArgumentError("vm:tail_file: give `start` or `from`, not both")
        start = o.get("start", o.get("from"))
        return self._tail(p, start, kind="tail_file")

    def _tail(self, p: str, start: Any, kind: str) -> Tail:
        if start is None or start == "end":
            ts = TailStart("end")
        elif start in ("beginning", "start"):
            ts = TailStart("beginning")
        elif isinstance(start, str):
            raise ArgumentError(f'vm:tail_file: opts.start = `{start}` (expected "beginning"|"end"|number)')
        elif isinstance(start, bool) or not isinstance(start, (int, float)):
            raise ArgumentError(f"vm:tail_file: opts.start type {type_name(start)} not supported "
                                '(expected number or "beginning"/"end")')
        else:
            if isinstance(start, float) and start != start or start in (float("inf"), float("-inf")):
                raise ArgumentError(f"vm:tail_file: opts.start must be finite, got {start}")
            n = int(start)
            if n < 0:
                n = max(0, self.stat(p).size + n)
            ts = TailStart("offset", n)
        return self._open_stream(kind, f'"{p}"', TailFileArgs(p, ts), f"vm:tail_file `{p}`")

    def fd_stream(self, fd: Any) -> Tail:
        """Stream everything read from an open handle (a `File` or its `fd()`)."""
        if isinstance(fd, File):
            if fd.closed:
                raise ArgumentError("vm:fd_stream: file is closed")
            h = fd.fd()
        elif isinstance(fd, bool) or not isinstance(fd, (int, float)) or fd <= 0:
            raise ArgumentError(f"vm:fd_stream expected fd or File, got {type_name(fd) if not isinstance(fd, (int, float)) or isinstance(fd, bool) else fd}")
        else:
            h = int(fd)
        return self._open_stream("fd_stream", str(h), FdStreamArgs(h), f"vm:fd_stream {h}")

    # ---- layer 0 -----------------------------------------------------------------

    def syscall(self, nr: Any, *args: Any) -> SyscallOutcome:
        """A raw syscall in the agent: `syscall(39)`, `syscall(nr, a1, ..., a6)`,
        or the table form `syscall(nr, {"args": [...], "bufs": [b"..."], "ptrs": [slot]})`.
        Failure is data (`ret`/`errno`), not an exception."""
        op = build_syscall("syscall", nr, args)
        return outcome(self._agent("syscall", op))

    def syscall_async(self, nr: Any, *args: Any) -> PendingSyscall:
        """Start a syscall that may block; `.await_()` collects its outcome."""
        op = build_syscall("syscall_async", nr, args)
        self._require("syscall_async")

        async def call():
            return outcome(await self._acall(op))

        fut = self._session.spawn(call())
        return PendingSyscall("syscall_async", future_collector(self, fut))

    def ioctl(self, fd: Any, cmd: Any, data: Any = None, opts: Mapping | None = None) -> IoctlOutcome:
        """ioctl on an open handle; `data` is passed by pointer; `opts.bufs[i]`'s
        address is written into `data` at byte `opts.ptr_offsets[i]`.  An OS
        failure raises (unlike syscall)."""
        if isinstance(fd, File):
            fd = fd.fd()
        if fd is None:
            raise ArgumentError("ioctl: missing fd")
        if cmd is None:
            raise ArgumentError("ioctl: missing cmd")
        h = to_i64(fd, "ioctl: fd")
        c = to_i64(cmd, "ioctl: cmd") & (2**64 - 1)
        buf = b"" if data is None else to_bytes(data, "ioctl", "data")
        bufs, offs = [], []
        if opts is not None:
            if not isinstance(opts, Mapping):
                raise ArgumentError(f"ioctl: opts must be a table, got {type_name(opts)}")
            for k in opts:
                if k not in ("bufs", "ptr_offsets"):
                    raise ArgumentError(f"ioctl: unknown option `{k}` (valid: bufs, ptr_offsets)")
            bufs = [to_bytes(b, "ioctl", "bufs[]") for b in (opts.get("bufs") or [])]
            offs = [to_i64(o, "ioctl: ptr_offsets[]") for o in (opts.get("ptr_offsets") or [])]
            if len(offs) != len(bufs):
                raise ArgumentError(f"ioctl: {len(bufs)} bufs need {len(bufs)} ptr_offsets, got {len(offs)}")
            for o in offs:
                if o < 0 or o + 8 > len(buf):
                    raise ArgumentError(f"ioctl: ptr_offset {o} does not leave 8 bytes in data ({len(buf)} bytes)")
        res = self._unwrap("ioctl", self._agent("ioctl", IoctlArgs(h, c, buf, bufs, offs)))
        return IoctlOutcome(res.ret, res.out_data, list(res.out_bufs))

    def read_mem(self, addr: Any, length: Any) -> tuple[bytes | None, int | None]:
        """Bytes at `addr` in the agent's address space: `(data, None)`, or
        `(None, errno)` when the read faults."""
        a = to_i64(addr, "read_mem: addr") & (2**64 - 1)
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length < 2**32:
            raise ArgumentError(f"read_mem: len must be an integer 0..2^32-1, got {length!r}")
        res = self._agent("read_mem", ReadMemArgs(a, length))
        if res.ok:
            return res.value.bytes, None
        return None, res.value.errno

    # ---- workers, clock, batch ---------------------------------------------------

    def spawn_worker(self, opts: Mapping | None = None, **kw: Any):
        """A separate agent process in the guest, optionally with other
        credentials: `uid`, `gid`, `groups`."""
        from .worker import Worker

        o = merge_kw(opts, kw, "vm:spawn_worker") or {}
        check_keys(o, WORKER_KEYS, "vm:spawn_worker")
        if o.get("thread") is True:
            raise ArgumentError("vm:spawn_worker: `thread=true` is not yet supported (v1 always spawns a process sub-agent)")
        for k in ("uid", "gid"):
            v = o.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32):
                raise ArgumentError(f"vm:spawn_worker: `{k}` must be an integer 0..2^32-1, got {v!r}")
        groups = o.get("groups")
        if groups is not None:
            if isinstance(groups, (str, bytes, Mapping)) or not hasattr(groups, "__iter__"):
                raise ArgumentError(f"vm:spawn_worker: `groups` must be an array of gids, got {type_name(groups)}")
            groups = list(groups)
            for g in groups:
                if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < 2**32:
                    raise ArgumentError(f"vm:spawn_worker: `groups` entries must be integers 0..2^32-1, got {g!r}")
        op = SpawnWorkerArgs(uid=o.get("uid"), gid=o.get("gid"), groups=groups)
        handle = self._unwrap("vm:spawn_worker", self._agent("spawn_worker", op))
        return Worker(self, handle)

    def clock(self):
        from .clock import Clock

        return Clock(self)

    def batch(self, fn: Callable[[Any], Any]) -> list[dict]:
        """Queue ops with `fn(b)`, then send them in one round trip.  Returns one
        `{"ok": value}` or `{"err": message}` per op, in order; a failing op does
        not stop the others.  If `fn` raises, nothing is sent."""
        from .batch import Batch

        if not callable(fn):
            raise ArgumentError(f"vm:batch: expected a function, got {type_name(fn)}")
        self._require("batch")
        b = Batch()
        try:
            fn(b)
        finally:
            b.sent = True  # from here on `b` refuses new ops instead of dropping them
        if not b.items:
            return []
        op = BatchOpArgs([HostMessage(item.op.KIND, item.op) for item in b.items])
        res = self._agent("batch", op)
        if len(res.responses) != len(b.items):
            raise AgentCommError(f"agent: batch of {len(b.items)} ops got {len(res.responses)} answers")
        return [item.convert(msg) for item, msg in zip(b.items, res.responses)]


# Errors of the host model that already tell the story of this VM (or of the
# caller's argument): passed on as they are instead of being wrapped again.
_TOLD = (VmError, ArgumentError, SessionError, HandleError)


async def _quiet(coro) -> None:
    try:
        await coro
    except Exception:
        pass

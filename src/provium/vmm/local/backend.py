"""`--vmm local`: run the guest agent as a subprocess of this host.

Each "VM" is one `python -m provium.agent --fd N` process talking our
protocol over a socketpair, so everything above the VMM (the host model, the
Lua API, the runner) can be tested in milliseconds without QEMU.  Guest ops act
on the host for real: files are the host's files, commands run on the host.
The agent is started with PROVIUM_AGENT_LOCAL=1 so it refuses to set the clock
(this process may be root; it must never move the host's time).

What the local backend cannot do raises: pause/resume/reset/power_button/
wakeup (`Unimplemented`, "not yet implemented"), and the boot options
that only make sense for a real guest kernel (`files`, `initial_time`).
Memory, cpus, kernel command line and rng seed are ignored: there is no guest
kernel to give them to.  Disks are accepted as host-side objects: the host layer
makes their images and serves their sector I/O, and attaching or detaching one
only updates that model (there is no guest to plug it into).

Snapshots here are bookkeeping only: `snapshot` writes a valid snapshot file
(metadata, no guest state: ram_mode "none") so that preconditions, errors,
lab snapshots and the fixture cache work without QEMU; `restore` starts a
fresh agent.  The "guest's" files are the host's and are not rolled back, and
processes started before the snapshot are not carried over (docs/differences.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import snapfile
from ..base import VmInstance, Vmm, VmmError, VmSpec
from ..pidwait import wait_exited

if TYPE_CHECKING:
    from ...protocol.mux import MuxClient

# CIDs 0-2 are reserved in vsock; we mimic the numbering (never reused in a process).
_CIDS = itertools.count(3)
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
DEFAULT_HELLO_TIMEOUT = 30.0
GRACE = 1.0  # seconds the agent gets to exit on EOF before the keeper is told to stop it
KEEPER_GRACE = 4.0  # the keeper's own grace for the agent (2 s) plus killing the rest


def _package_root() -> str:
    import provium

    return str(Path(provium.__file__).resolve().parent.parent)


def _child_setup(parent_pid: int):
    def setup() -> None:
        # Runs in the child between fork and exec: get a signal when the thread
        # that forked us (the session's loop thread, which lives as long as the
        # session) dies.  SIGTERM, not SIGKILL: the agent then kills every process
        # it started before exiting, which SIGKILL would not let it do.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone: the signal was missed
            os._exit(1)

    return setup


class LocalInstance(VmInstance):
    backend = "local"

    def __init__(self, cid: int, proc: subprocess.Popen, client: MuxClient, sock: socket.socket) -> None:
        self.cid = cid
        self.proc = proc  # the keeper; the agent is its child
        self.pid = _agent_pid(proc.pid)
        self.client = client
        self._sock = sock
        self._down = False
        self.spec: VmSpec | None = None

    async def attach_disk(self, disk) -> None:
        """No guest kernel to plug into: the disk exists as the host layer's object only."""

    async def detach_disk(self, disk_id: str) -> None:
        """See attach_disk."""

    def alive(self) -> bool:
        return not self._down and self.proc.poll() is None and self.client.lost is None

    async def snapshot(self, path: Path, extra: dict | None = None) -> int:
        spec = self.spec
        assert spec is not None  # a launched instance has its spec
        meta = snapfile.SnapshotMeta(
            vm_name=spec.name, profile=spec.profile.name, backend="local", memory_bytes=spec.memory_bytes,
            cpus=spec.cpus, ram_mode="none", ram_size=0, state_offset=0, state_length=0,
            created_unix_ns=time.time_ns(), extra=dict(extra or {}))
        tmp = snapfile.write_tmp_name(Path(path))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                size = snapfile.append_meta(fd, meta, 0)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return size

    async def shutdown(self) -> None:
        if self._down:
            return
        self._down = True
        try:
            await self.client.close()
        finally:
            try:
                self._sock.close()
            except OSError:
                pass
            await _stop(self.proc, GRACE)


class LocalVmm(Vmm):
    name = "local"

    def __init__(self, *, python: str | None = None, env: dict | None = None, stderr=None) -> None:
        """`python`: interpreter for the agent (default: this one); `env`: extra
        environment for the agent; `stderr`: where its stderr goes (default: ours)."""
        self.python = python or sys.executable
        self.extra_env = dict(env or {})
        self.stderr = stderr
        self._instances: list[LocalInstance] = []

    def _check_spec(self, spec: VmSpec) -> None:
        for key, given in (("files", spec.files), ("initial_time", spec.initial_time is not None),
                           ("shares", spec.shares)):
            if given:
                hint = {
                    "files": "guest ops act on the host filesystem here; write them with vm:write_file after boot",
                    "initial_time": "it would set the host's clock",
                    "shares": "the agent runs on the host: use the host directory itself",
                }[key]
                raise VmmError(f"vmm: the local backend cannot honour boot option `{key}` ({hint})")

    async def launch(self, spec: VmSpec) -> LocalInstance:
        self._check_spec(spec)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PROVIUM_AGENT_LOCAL"] = "1"
        root = _package_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # --keeper: the process we start is the agent's keeper (a subreaper that
        # kills whatever the agent started once the agent is gone, SIGKILL included).
        argv = [self.python, "-m", "provium.agent", "--fd", str(child.fileno()), "--keeper"]
        try:
            # Spawned from the session's loop thread on purpose: PDEATHSIG fires
            # when the *thread* that forked the child exits.
            proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True,
                                    preexec_fn=_child_setup(os.getpid()), close_fds=True)
        except OSError as exc:
            parent.close()
            child.close()
            raise VmmError(f"vmm: cannot start the local agent `{' '.join(argv)}`: {exc.strerror or exc}") from exc
        child.close()
        # The wire's client loads with the first agent: a file that starts none
        # does not pay for the message types (issue 13: one-file start-up).
        from ...protocol.mux import ClientError, MuxClient

        try:
            client = await MuxClient.connect(parent, timeout=spec.agent_boot_timeout or DEFAULT_HELLO_TIMEOUT)
        except (ClientError, OSError, asyncio.TimeoutError) as exc:
            parent.close()
            await _stop(proc, 0)
            why = str(exc) or "no answer to hello"
            if isinstance(exc, asyncio.TimeoutError):
                why = f"no answer to hello within {spec.agent_boot_timeout or DEFAULT_HELLO_TIMEOUT:g}s"
            code = proc.returncode
            tail = f" (agent exited with status {code})" if code not in (None, -signal.SIGKILL) else ""
            raise VmmError(f"vmm: local agent for `{spec.name}` did not start: {why}{tail}") from exc
        inst = LocalInstance(next(_CIDS), proc, client, parent)
        inst.spec = spec
        self._instances.append(inst)
        return inst

    async def restore(self, spec: VmSpec, snapshot: Path) -> LocalInstance:
        meta = snapfile.read_meta(snapshot)
        if meta.backend != "local":
            raise snapfile.SnapshotFileError(snapshot, f"was taken on the {meta.backend} backend; the local "
                                                       "backend cannot restore guest state")
        return await self.launch(spec)

    async def close(self) -> None:
        for inst in self._instances:
            try:
                await inst.shutdown()
            except Exception:
                pass
        self._instances.clear()


def _agent_pid(keeper: int) -> int:
    """The agent's pid: the keeper's first child (the keeper's own pid if it has none)."""
    try:
        with open(f"/proc/{keeper}/task/{keeper}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else keeper
    except (OSError, ValueError):
        return keeper


async def _wait_exit(proc: subprocess.Popen, seconds: float) -> bool:
    """Whether the keeper exited within `seconds`; a pidfd wakes us at its exit
    (`vmm/pidwait.py`), and nothing is reaped (see `_stop`)."""
    if proc.returncode is not None:
        return True
    return await wait_exited(proc.pid, seconds)


async def _stop(proc: subprocess.Popen, grace: float) -> None:
    """Give the agent `grace` seconds to exit on end of stream; then ask the keeper
    to stop it (SIGTERM: it wakes a stopped agent, lets it clean up, then kills
    everything it started); as a last resort SIGKILL the group; then reap.

    The group is killed while the leader is still unreaped (a zombie at worst),
    so its id cannot have been recycled by an unrelated process.
    """
    if not await _wait_exit(proc, grace):
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        await _wait_exit(proc, KEEPER_GRACE)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # A SIGKILLed process exits at once: wait for that event, then reap it.
    await _wait_exit(proc, 2.0)
    proc.wait()

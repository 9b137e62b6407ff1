"""`--executor ray`: each test file is one Ray task, on whichever node has room.

Only `cli/run.py` imports this module, and only when `--executor ray` is given:
`import ray` costs about a second and must stay off the normal CLI path.

How a file runs
  The driver submits one *streaming generator* task per file.  On the node the
  task runs the very same `Dispatcher` as a local run, for that one file: it
  starts the usual runner subprocess (same runner, same timeouts, same crash
  handling, same coordinator for VM charges and claims).  Every event the
  dispatcher emits is yielded back at once, so the driver's sinks (CLI output,
  `--json`, `--junit`, `--save-events`, the event socket) see the same stream
  as a local run, while the file runs.  We chose a generator task over an actor:
  Ray schedules a task by its resources like any other (an actor would hold its
  resources for its whole life), a generator needs no extra process or
  lifetime management, and cancelling the task cancels the file.

What a file asks Ray for
  Its whole pool charge as the local pool would take it (charge.py): the
  per-file overhead plus its `provium:claim`, or plus every VM it declares
  (memory + VMM overhead, vCPUs), as Ray `memory`/`num_cpus` (at least one
  CPU: the runner keeps one busy); plus one unit of the custom resource `kvm`
  when its VMs run under KVM, so such files go only to nodes started with
  `--resources '{"kvm": N}'`.  Ray places a task once, before it starts, so
  the peak is asked for up front.  A file whose charge fits no node of the
  cluster fails at once with the reason (Ray would keep such a task pending
  forever), as a local run refuses a claim larger than the pool.

Barriers
  The node's coordinator forwards `barrier` requests to one named async actor
  per run (`BarrierHub`), so a barrier spans files on every node.  The driver
  tells the hub when a file ends, so a barrier that can no longer be met is
  answered at once (as in a local run), not at its timeout.

Faults
  A task is never retried (`max_retries=0`): a file may have side effects that a
  second run would not reproduce, and a node death is a fact the user should
  see.  A file whose node dies fails as crashed with a message naming the node;
  the run carries on.  Ctrl-C (or `--fail-fast`) cancels the remote tasks with
  `force=True`: the worker process dies, its runner gets its parent-death
  signal, and the runner's QEMU children die with it.

The node that ran a file is named in its `file_dispatched` and `file_completed`
events (`node`, a field a local run leaves off the wire), in `FileResult.node`
and in a per-node summary line on stderr (see docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ray

from provium.errors import ConfigError
from provium.events import types as ev
from provium.events.sinks import Sink
from provium.fsutil import printable

from .charge import ChargeRules, FileCharge, file_charge
from .coordinator import Coordinator
from .discovery import Discovered
from .dispatch import FAIL_FAST_REASON, Dispatcher, DispatchOptions
from .pool import PoolSize, fmt_amount, size_pool
from .results import FileResult, TestOutcome

NAMESPACE = "provium"
# What never goes to the workers with the project directory (Ray also honours .gitignore).
EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache",
            ".pytest_cache", "build", "dist", "*.egg-info", "node_modules"]


class RayExecutorError(ConfigError):
    """The Ray executor cannot run this suite (bad address, file outside the project, ...)."""


# ---- the cluster-wide barrier service ---------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=0)
class BarrierHub:
    """Barriers for one run.  Async actor: every waiting caller is one coroutine."""

    def __init__(self, live: int) -> None:
        self.live = live  # files not finished yet
        self.rounds: dict[str, tuple[int, list[tuple[int, asyncio.Future]]]] = {}

    async def arrive(self, name: str, count: int, timeout: float, owner: int) -> tuple[bool, str | None]:
        loop = asyncio.get_running_loop()
        rnd = self.rounds.get(name)
        if rnd is not None and not rnd[1]:
            rnd = None  # a released barrier starts a new round
        if rnd is None:
            rnd = self.rounds[name] = (count, [])
        elif rnd[0] != count:
            return (False, f"barrier `{name}`: called with count {count} but the waiting callers use count "
                           f"{rnd[0]}; every caller must pass the same count")
        fut: asyncio.Future = loop.create_future()
        rnd[1].append((owner, fut))
        if len(rnd[1]) >= count:
            self._release(name, True, None)
        else:
            self._check_unmeetable()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout))
        except asyncio.TimeoutError:
            cur = self.rounds.get(name)
            if cur is not None:
                cur[1][:] = [(o, f) for o, f in cur[1] if f is not fut]
            return (False, f"barrier `{name}`: timed out with {len(cur[1]) + 1 if cur else 1} of {count} "
                           "callers arrived")

    def file_done(self, owner: int) -> None:
        self.live -= 1
        for _count, waiting in self.rounds.values():
            for o, f in list(waiting):
                if o == owner:
                    waiting.remove((o, f))
                    if not f.done():
                        f.set_result((False, "the file ended"))
        self._check_unmeetable()

    def _release(self, name: str, met: bool, why: str | None) -> None:
        _count, waiting = self.rounds[name]
        for _o, f in waiting:
            if not f.done():
                f.set_result((met, why))
        waiting.clear()

    def _check_unmeetable(self) -> None:
        for name, (count, waiting) in self.rounds.items():
            if waiting and count > self.live:
                self._release(name, False,
                              f"barrier `{name}` can never be met: it waits for {count} callers but only "
                              f"{self.live} file(s) of this run are still running or waiting to run, and "
                              "each file is one caller at a time")


# ---- the node side ------------------------------------------------------------------------


class _ClusterCoordinator(Coordinator):
    """The node's coordinator, with barriers answered by the run's `BarrierHub`.

    The hub's answer comes on a Ray thread; it is handed to the dispatcher's
    selector thread through a socketpair (the coordinator is single-threaded)."""

    def __init__(self, *args: Any, hub: Any, owner: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub = hub
        self._global_owner = owner
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, 1, ("coord-ray", None))  # selectors.EVENT_READ

    def _barrier(self, c: Any, rid: int, msg: dict) -> None:
        name, count, timeout = msg["name"], msg["count"], msg["timeout"]
        if not isinstance(name, str) or not isinstance(count, int) or not isinstance(timeout, (int, float)):
            raise ValueError("name, count and timeout must be str, int and number")
        ref = self._hub.arrive.remote(name, count, float(timeout), self._global_owner)
        threading.Thread(target=self._await, args=(ref, c, rid), daemon=True,
                         name=f"provium-barrier-{name}").start()

    def _await(self, ref: Any, c: Any, rid: int) -> None:
        try:
            met, message = ray.get(ref)
        except Exception as exc:  # the hub (the driver) went away
            met, message = False, f"barrier: the cluster's barrier service failed: {exc}"
        self._answers.put((c, {"id": rid, "ok": True, "met": met, "message": message}))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def on_ready(self, kind: str, conn: Any, mask: int) -> None:
        if kind != "coord-ray":
            super().on_ready(kind, conn, mask)
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                c, answer = self._answers.get_nowait()
            except queue.Empty:
                return
            self._send(c, answer)

    def close(self) -> None:
        try:
            self._sel.unregister(self._wake_r)
        except (KeyError, ValueError):
            pass
        self._wake_r.close()
        self._wake_w.close()
        super().close()


class _QueueSink(Sink):
    def __init__(self, q: queue.SimpleQueue) -> None:
        super().__init__()
        self.q = q

    def write_frame(self, frame: ev.EventFrame) -> None:
        if frame.kind != "pool_state":  # the node's one-file pool says nothing about the run's
            self.q.put(frame)


def node_name() -> str:
    """`<node id prefix>@<node address>`: the id tells apart nodes sharing one machine."""
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    addr = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node_id), None)
    return f"{node_id[:12]}@{addr or ray.util.get_node_ip_address()}"


def settings_for_nodes(settings_json: str, project_dir: str) -> str:
    """The run settings as a node must read them: a `provium.toml` inside the project
    is named relative to it, so each node reads its own copy of the project (Ray's
    working directory), not a path that exists only on the driver's machine."""
    data = json.loads(settings_json)
    cfg = data.get("config_path")
    if cfg:
        root, full = os.path.realpath(project_dir), os.path.realpath(cfg)
        if os.path.commonpath([root, full]) == root:
            data["config_path"] = os.path.relpath(full, root)
    return json.dumps(data, sort_keys=True)


def settings_on_node(settings_json: str) -> str:
    """A relative `config_path` names the node's copy of the project (the task's cwd)."""
    data = json.loads(settings_json)
    cfg = data.get("config_path")
    if cfg and not os.path.isabs(cfg):
        data["config_path"] = os.path.join(os.getcwd(), cfg)
    return json.dumps(data, sort_keys=True)


# How long a task waits for its node to finish unpacking the project (Ray's package lock).
UNPACK_WAIT = 120.0


def _wait_for_unpack(copy: str, node: str, wait: float) -> int | None:
    """Hold Ray's lock on the package behind `copy` (an fd to close), or None when there is none.

    Ray (2.60, packaging.py) unpacks a `gcs://` working_dir under a file lock named
    `<copy>.zip.lock` (an flock, from the `filelock` package); holding it means no node
    is removing or unpacking the copy meanwhile."""
    try:
        fd = os.open(copy + ".zip.lock", os.O_RDWR)
    except OSError:
        return None  # not a package Ray unpacked (a local working_dir), or its lock is gone
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                os.close(fd)
                raise RayExecutorError(
                    f"node {node}: the project copy `{copy}` was still being unpacked by Ray after "
                    f"{wait:g}s (its lock `{copy}.zip.lock`: {exc.strerror})") from exc
            time.sleep(0.05)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system (TMPDIR elsewhere), or links not allowed: a real copy
        shutil.copy2(src, dst)


def private_project_copy(path: str, node: str, dest: str, wait: float = UNPACK_WAIT) -> str:
    """A copy of the node's project directory (Ray's working_dir) that only this task uses,
    made of hard links under `dest`; the directory the file's runner reads `path` from.

    Why not the working_dir itself: nodes that share a machine (a test cluster, two
    raylets on one host) share Ray's unpacked copy, and each node's runtime-env agent
    removes it and unpacks it again when it prepares a job for its node (Ray 2.60:
    `create` with overwrite=True), at any moment of the job.  A worker that entered the
    first copy is then left in a deleted directory, and every relative open fails with
    ENOENT (a file "not found" in its own project).  Hard links keep the files of the
    copy we saw alive whatever Ray does to its directory afterwards, and cost no data."""
    # The worker's shell entered the copy by name (`cd <copy> && ...`), which set PWD;
    # getcwd() fails once that directory is deleted.
    copy = os.environ.get("PWD") or ""
    if not os.path.isabs(copy):
        try:
            copy = os.getcwd()
        except FileNotFoundError as exc:
            raise RayExecutorError(f"node {node}: this Ray worker's working directory (the project copy) was "
                                   "deleted and PWD does not name it") from exc
    lock = _wait_for_unpack(copy, node, wait)
    try:
        if not os.path.isdir(copy):
            raise RayExecutorError(f"node {node}: the project copy `{copy}` (Ray's working_dir) does not exist "
                                   f"on this node, so `{path}` cannot be run there")
        if not os.path.isfile(os.path.join(copy, path)):
            raise RayExecutorError(f"node {node}: `{path}` is not in the project copy `{copy}` (Ray's working_dir "
                                   f"on this node; it holds {len(os.listdir(copy))} entries); is it excluded "
                                   "by a .gitignore?")
        mine = os.path.join(dest, "project")
        shutil.copytree(copy, mine, symlinks=True, copy_function=_link_or_copy)
    finally:
        if lock is not None:
            os.close(lock)  # releases the flock
    return mine


_DONE = object()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its error texts


def run_file_on_node(index: int, path: str, settings_json: str, env: dict[str, str], vmm: str,
                     file_timeout: float | None, hub: Any):
    """The body of a file's task: yields ("node", name), ("events", [frames]) ..., ("result", FileResult)."""
    node = node_name()
    yield ("node", node)
    q: queue.SimpleQueue = queue.SimpleQueue()
    work = tempfile.mkdtemp(prefix="provium-ray-")
    try:
        project = private_project_copy(path, node, work)
    except (RayExecutorError, OSError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        result = FileResult(path=path, chunk_error=f"crashed: {exc}", crashed=True)
        _QueueSink(q).emit(ev.FileCompleted(path=printable(path), status=result.status, duration_ns=0))
        yield ("events", [q.get()])
        yield ("result", result)
        return
    home = os.environ.get("PWD") or project
    os.chdir(project)  # what the node reads by relative path (the claim, provium.toml) comes from it too
    run_env = dict(os.environ)
    run_env.update(env)
    run_env["PWD"] = project
    run_env["PROVIUM_RAY_NODE"] = node  # a test file may want to know where it runs
    pool: PoolSize = size_pool(vmm=vmm)  # this node's own pool: VM charges of the file draw from it
    opts = DispatchOptions(
        settings_json=settings_on_node(settings_json), work_dir=work, pool=pool, file_timeout=file_timeout,
        env=run_env, cwd=project,
        # One file per dispatcher here: a zygote would cost as much as the runner it saves.
        zygote=False, psi_paths=(),
        coordinator_factory=lambda *a, **kw: _ClusterCoordinator(*a, hub=hub, owner=index, **kw))
    dispatcher = Dispatcher(_QueueSink(q), opts)
    box: list[Any] = []

    def work_thread() -> None:
        try:
            box.extend(dispatcher.run([Discovered(path=path, root=path, rel="")]))
        except BaseException as exc:  # reported to the driver as the file's crash
            box.append(exc)
        finally:
            q.put(_DONE)

    # The runner's PR_SET_PDEATHSIG fires when this thread ends; it lives as long as the file.
    t = threading.Thread(target=work_thread, name="provium-ray-file", daemon=True)
    t.start()
    try:
        done = False
        while not done:
            batch = [q.get()]
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is _DONE
            frames = [x for x in batch if x is not _DONE]
            if frames:
                yield ("events", frames)
        t.join()
        if box and isinstance(box[0], FileResult):
            yield ("result", box[0])
        else:
            yield ("result", FileResult(path=path, chunk_error=f"crashed: the Ray task failed: {box[0] if box else '?'}",
                                        crashed=True))
    finally:
        dispatcher.kill_running()  # a cancelled task leaves no runner (and so no QEMU) behind
        t.join(timeout=15)
        try:
            os.chdir(home)  # the worker runs the job's next task from Ray's copy again
        except OSError:
            os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


_remote_run_file = ray.remote(num_returns="streaming", max_retries=0)(run_file_on_node)


# ---- the driver side ---------------------------------------------------------------------


@dataclass
class RayOptions:
    settings_json: str
    pool: PoolSize
    vmm: str
    address: str | None = None  # None: RAY_ADDRESS, else a local instance for this run
    project_dir: str = "."  # shipped to the workers as the runtime_env working_dir
    file_timeout: float | None = None
    fail_fast: bool = False
    env: dict[str, str] | None = None  # extra environment for the runners
    rules: ChargeRules | None = None  # how a file's charge is computed; None: from `pool` alone


@dataclass
class _Track:
    index: int
    file: Discovered
    remote_path: str
    node: str | None = None
    seen: dict[str, TestOutcome] | None = None
    current: str | None = None
    started: float = 0.0
    result: FileResult | None = None


class RayExecutor:
    def __init__(self, sink: Sink, opts: RayOptions,
                 on_file_done: Callable[[int, FileResult], None] | None = None) -> None:
        self.sink = sink
        self.opts = opts
        self.on_file_done = on_file_done
        self.nodes: dict[str, int] = {}  # node -> files it ran

    def _connect(self) -> bool:
        """Connect to (or start) Ray; True when this run connected and must disconnect
        (which also stops a local instance it started).  A process already connected
        (the Python API) keeps its connection and its own runtime environment."""
        if ray.is_initialized():
            return False
        address = self.opts.address or os.environ.get("RAY_ADDRESS") or None
        # The project directory goes to every worker; Ray takes it only per job.
        runtime_env = {"working_dir": os.path.realpath(self.opts.project_dir), "excludes": EXCLUDES}
        try:
            if address:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, runtime_env=runtime_env,
                         logging_level=logging.WARNING)
            else:
                # A throwaway local instance, bound to loopback only.
                ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1", runtime_env=runtime_env, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at `{address}`" if address else "(a local instance)"
            raise RayExecutorError(f"--executor ray: cannot connect to the Ray cluster {where}: {exc}") from exc
        return True

    def _remote_path(self, f: Discovered) -> str:
        root = os.path.realpath(self.opts.project_dir)
        full = os.path.realpath(f.path)
        if os.path.commonpath([root, full]) != root:
            raise RayExecutorError(
                f"--executor ray: `{f.path}` is outside the project directory `{root}`, which is all that "
                "is shipped to the Ray workers; run provium from a directory that contains the test files")
        return os.path.relpath(full, root) if os.path.isabs(f.path) else f.path

    def charge(self, f: Discovered) -> FileCharge:
        return file_charge(f.path, self.opts.rules or ChargeRules(pool=self.opts.pool, profiles={}))

    @staticmethod
    def task_options(charge: FileCharge) -> dict[str, Any]:
        """Ray resources for a file's task: its charge, at least one CPU (the runner's)."""
        opts: dict[str, Any] = {"memory": max(1, charge.amount.memory_bytes),
                                "num_cpus": max(1, charge.amount.cpus)}
        if charge.kvm:
            opts["resources"] = {"kvm": 1}
        return opts

    @staticmethod
    def _node_capacities() -> list[tuple[str, dict[str, float]]]:
        return [(f"{n['NodeID'][:12]}@{n.get('NodeManagerAddress', '?')}", dict(n.get("Resources") or {}))
                for n in ray.nodes() if n.get("Alive")]

    @staticmethod
    def refusal(charge: FileCharge, nodes: list[tuple[str, dict[str, float]]]) -> str | None:
        """Why no node of the cluster could ever run the file (None: some node can)."""
        need = RayExecutor.task_options(charge)

        def fits(res: dict[str, float]) -> bool:
            return (res.get("memory", 0) >= need["memory"] and res.get("CPU", 0) >= need["num_cpus"]
                    and (not charge.kvm or res.get("kvm", 0) >= 1))

        if not nodes or any(fits(res) for _, res in nodes):
            return None
        biggest = max(nodes, key=lambda n: (n[1].get("memory", 0), n[1].get("CPU", 0)))
        have = fmt_amount(ev.ResourceAmount(int(biggest[1].get("memory", 0)), int(biggest[1].get("CPU", 0))))
        kvm_nodes = sum(1 for _, res in nodes if res.get("kvm", 0) >= 1)
        msg = (f"no node of the Ray cluster can run this file: it needs {charge.describe()}, and the largest "
               f"of the {len(nodes)} node(s) has {have}")
        if charge.kvm:
            msg += f"; {kvm_nodes} node(s) offer the `kvm` resource"
        return msg + (". Declare the file's real peak with provium:claim{memory=..., cpus=...}, or add a larger "
                      "node (ray start --memory/--num-cpus/--resources)")

    def run(self, files: list[Discovered]) -> list[FileResult]:
        tracks = [_Track(i, f, self._remote_path(f)) for i, f in enumerate(files)]
        started_ray = self._connect()
        refs: dict[int, Any] = {}
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        hub = None
        try:
            hub_cls: Any = BarrierHub  # an actor class once ray.remote wrapped it
            hub = hub_cls.options(name=f"provium-barriers-{os.getpid()}-{time.time_ns()}",
                                  namespace=NAMESPACE).remote(len(files))
            env = dict(self.opts.env or {})
            settings = settings_for_nodes(self.opts.settings_json, self.opts.project_dir)
            nodes = self._node_capacities()
            left = len(tracks)
            refused = False
            for t in tracks:
                charge = self.charge(t.file)
                why = self.refusal(charge, nodes)
                if why is not None or (refused and self.opts.fail_fast):
                    hub.file_done.remote(t.index)
                    if why is None:
                        t.result = FileResult(path=t.file.path, not_run=FAIL_FAST_REASON, chunk_error=None)
                    else:
                        t.result = self._refuse(t, why)
                        refused = True
                    left -= 1
                    continue
                gen = _remote_run_file.options(**self.task_options(charge)).remote(
                    t.index, t.remote_path, settings, env, self.opts.vmm,
                    self.opts.file_timeout, hub)
                refs[t.index] = gen
                threading.Thread(target=self._pump, args=(t.index, gen, inbox), daemon=True,
                                 name=f"provium-ray-pump-{t.index}").start()
            self.sink.emit(ev.PoolState(used=ev.ResourceAmount(), available=self._cluster_total()))
            stopping = refused and self.opts.fail_fast
            while left:
                index, kind, item = inbox.get()
                t = tracks[index]
                if t.result is not None:
                    continue
                if kind == "node":
                    t.node = item
                    t.started = time.monotonic()
                elif kind == "events":
                    for frame in item:
                        self._forward(t, frame)
                elif kind in ("result", "lost"):
                    if kind == "result":
                        result: FileResult = item
                    else:
                        result = self._lost(t, item, stopping)
                    result.path = t.file.path
                    result.node = t.node
                    t.result = result
                    left -= 1
                    if t.node:
                        self.nodes[t.node] = self.nodes.get(t.node, 0) + 1
                    hub.file_done.remote(index)
                    if self.on_file_done is not None:
                        self.on_file_done(index, result)
                    if self.opts.fail_fast and not result.passed and not stopping:
                        stopping = True
                        for o in tracks:
                            if o.result is None and o.node is None:
                                ray.cancel(refs[o.index], force=True)
            self.sink.emit(ev.PoolState(used=ev.ResourceAmount(), available=self._cluster_total()))
        except BaseException:
            for ref in refs.values():  # Ctrl-C and friends: nothing keeps running remotely
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            raise
        finally:
            if hub is not None:
                try:
                    ray.kill(hub)
                except Exception:
                    pass
            if started_ray:
                ray.shutdown()
        return [t.result for t in tracks if t.result is not None]

    def _refuse(self, t: _Track, why: str) -> FileResult:
        result = FileResult(path=t.file.path, chunk_error=why)
        self.sink.emit(ev.FileCompleted(path=printable(t.file.path), status=result.status, duration_ns=0))
        if self.on_file_done is not None:
            self.on_file_done(t.index, result)
        return result

    def _cluster_total(self) -> ev.ResourceAmount:
        try:
            res = ray.cluster_resources()
            return ev.ResourceAmount(int(res.get("memory", 0)), int(res.get("CPU", 0)))
        except Exception:
            return ev.ResourceAmount()

    @staticmethod
    def _pump(index: int, gen: Any, inbox: queue.SimpleQueue) -> None:
        """Waits on one file's stream (Ray calls block), hands each item to the driver loop."""
        try:
            for ref in gen:
                kind, item = ray.get(ref)
                inbox.put((index, kind, item))
        except Exception as exc:
            inbox.put((index, "lost", exc))
            return
        inbox.put((index, "lost", None))  # ignored if the result came (the stream's normal end)

    def _forward(self, t: _Track, frame: ev.EventFrame) -> None:
        p = frame.payload
        if getattr(p, "path", None) == t.remote_path and t.remote_path != t.file.path:
            frame = replace(frame, payload=replace(p, path=t.file.path))
            p = frame.payload
        if isinstance(p, (ev.FileDispatched, ev.FileCompleted)) and t.node:
            frame = replace(frame, payload=replace(p, node=t.node))
            p = frame.payload
        if isinstance(p, ev.TestStarted):
            t.current = p.name
        elif isinstance(p, (ev.TestPassed, ev.TestFailed, ev.TestSkipped)):
            status = {"test_passed": "passed", "test_failed": "failed", "test_skipped": "skipped"}[frame.kind]
            msg = getattr(p, "reason", None) if status != "passed" else None
            if t.seen is None:
                t.seen = {}
            t.seen[p.name] = TestOutcome(name=p.name, status=status, message=msg or None,
                                         duration_ns=getattr(p, "duration_ns", 0), meta=dict(p.meta))
        self.sink.emit_frame(frame)

    def _lost(self, t: _Track, exc: BaseException | None, stopping: bool) -> FileResult:
        """The file's task ended without a result: its node died, or it was cancelled."""
        path = t.file.path
        if stopping and t.node is None:
            return FileResult(path=path, not_run=FAIL_FAST_REASON, chunk_error=None)
        where = f"node {t.node}" if t.node else "a Ray node (before the file started)"
        if isinstance(exc, ray.exceptions.RayTaskError):
            msg = f"crashed: the Ray task running this file failed on {where}"
        else:
            msg = f"crashed: {where} died or lost the task while this file ran"
        msg += f" ({type(exc).__name__ if exc else 'no result'})"
        if exc is not None:
            text = _ANSI.sub("", str(exc)).strip().splitlines()
            if text:
                msg += ": " + " / ".join(line.strip() for line in text[-3:])[:500]
        tests = list((t.seen or {}).values())
        if t.current is not None and t.current not in (t.seen or {}):
            tests.append(TestOutcome(name=t.current, status="failed", message=f"{where} died while this test ran"))
        duration_ns = int((time.monotonic() - t.started) * 1e9) if t.started else 0
        result = FileResult(path=path, tests=tests, chunk_error=msg, crashed=True, duration_ns=duration_ns)
        self.sink.emit(ev.FileCompleted(path=printable(path), status=result.status, duration_ns=duration_ns,
                                        node=t.node or ""))
        return result

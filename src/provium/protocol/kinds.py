"""Which module defines the wire type of each op and reply kind, loaded on first use.

The agent imports an op family's types (`ops_<family>.py`) only when the first op
of that family arrives: building all of them at start-up was about a quarter of the
agent's start inside a guest.  This table is all a session needs to route a frame
before then; tests/unit/test_protocol_kinds.py checks that it names every kind the
family modules define, and each in its own family.  The agent's handlers are split
the same way (`provium.agent.<family>`, see agent/ops.py).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing stays out of the agent's start (see core.py)
if TYPE_CHECKING:
    from typing import Any

# family -> its module, relative to this package
FAMILIES = {
    "core": "core", "control": "ops_control", "files": "ops_files", "procs": "ops_procs", "streams": "ops_streams",
    "clock": "ops_clock", "syscalls": "ops_syscalls", "workers": "ops_workers", "batch": "ops_batch",
}

# op kind (host -> agent) -> family
HOST = {
    "hello": "core", "cancel": "control", "credit": "control",
    "open_file": "files", "read": "files", "write": "files", "close": "files", "read_file": "files",
    "write_file": "files", "stat": "files", "listdir": "files", "mkdir": "files", "unlink": "files",
    "rename": "files", "seek": "files",
    "exec": "procs", "run_async": "procs", "wait": "procs", "kill": "procs", "get_pid": "procs",
    "proc_stdin_write": "procs", "proc_stdin_close": "procs", "proc_status": "procs",
    "tail_file": "streams", "fd_stream": "streams", "proc_stream": "streams",
    "get_time": "clock", "set_time": "clock", "sleep_clock": "clock", "advance_clock": "clock",
    "syscall": "syscalls", "ioctl": "syscalls", "read_mem": "syscalls",
    "spawn_worker": "workers", "worker_exec": "workers", "worker_run_async": "workers",
    "worker_open_file": "workers", "worker_syscall": "workers", "worker_syscall_begin": "workers",
    "worker_syscall_await": "workers", "worker_kill": "workers", "worker_join": "workers",
    "batch_exec": "batch", "batch_op": "batch",
}

# Ops answered by an ack and then a stream of frames.
STREAM_KINDS = frozenset({"tail_file", "fd_stream", "proc_stream"})

# reply kind (agent -> host) -> family: an op's reply is `<op>_result`, in its op's family
AGENT = {f"{kind}_result": fam for kind, fam in HOST.items() if fam not in ("core", "control")}
AGENT.update({"hello_ok": "core", "agent_error": "core", "hello_err": "control", "stream_frame": "streams",
              "stream_end": "streams"})

_host_types: dict = {}
_agent_types: dict = {}


def family(name: str) -> Any:
    """The module of op family `name`, imported now if it was not yet."""
    mod = f"{__package__}.{FAMILIES[name]}"
    # __import__ even when the module is in sys.modules: while another thread is still
    # importing it, only the import system waits for it to finish.  Not importlib:
    # the agent's start leaves it out.
    __import__(mod)
    return sys.modules[mod]


def host_type(kind: str) -> Any:
    """The type of op `kind`'s data, or None for a kind no family defines."""
    tp = _host_types.get(kind)
    if tp is None:
        fam = HOST.get(kind)
        if fam is None:
            return None
        tp = _host_types[kind] = family(fam).HOST_KINDS[kind]
    return tp


def agent_type(kind: str) -> Any:
    """The type of reply `kind`'s data, or None for a kind no family defines."""
    tp = _agent_types.get(kind)
    if tp is None:
        fam = AGENT.get(kind)
        if fam is None:
            return None
        tp = _agent_types[kind] = family(fam).AGENT_KINDS[kind]
    return tp

"""What the agent costs to start: its imports stay lean, and lean imports change nothing."""

from __future__ import annotations

import json
import subprocess
import sys

FIELDS = r"""
import sys
if sys.argv[1] == "typing-first":
    import typing  # noqa: F401
import provium.agent.__main__  # the entry point first, as `python -m provium.agent` runs it
import socket, threading, dataclasses
from provium.agent import AgentState, serve
from provium.protocol.framing import encode_frame, read_frame
# Serve a few ops: answering them must not pull in what start-up avoided.
a, b = socket.socketpair()
t = threading.Thread(target=serve, args=(b, b, AgentState(local=True)), daemon=True)
t.start()
rf = a.makefile("rb")
new = {}
def op(ch, kind, data, ok=True):
    before = set(sys.modules)
    a.sendall(encode_frame({"ch": ch, "kind": kind, "data": data}))
    reply = read_frame(rf)
    assert not ok or reply["kind"] != "agent_error", reply
    new[kind] = sorted(set(sys.modules) - before)
op(0, "hello", {"protocol_version": 1})
at_hello = sorted(sys.modules)
for i, (kind, data) in enumerate([("get_time", None), ("exec", {"cmd": "true"}), ("stat", {"path": "/"}),
                                  ("read_file", {"path": "/proc/self/stat"})], 1):
    op(i, kind, data)
after_ops = sorted(sys.modules)
# the other families (unknown handles: the family loads, then refuses the handle: ok=False)
op(10, "batch_exec", {"items": [{"cmd": "true"}]})
op(11, "fd_stream", {"handle": 999}, ok=False)
op(12, "read_mem", {"addr": 0, "len": 0}, ok=False)
op(13, "worker_kill", {"handle": 999}, ok=False)
a.shutdown(socket.SHUT_WR)
t.join()
from provium.protocol import envelope, messages, types, core, ops_batch, ops_clock, ops_files, ops_procs
from provium.protocol import ops_streams, ops_syscalls, ops_workers
out = {}
for mod in (messages, types, envelope, core, ops_batch, ops_clock, ops_files, ops_procs, ops_streams,
            ops_syscalls, ops_workers):
    for name, obj in vars(mod).items():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__:
            out[f"{mod.__name__}.{name}"] = [f.name for f in dataclasses.fields(obj)]
import json  # only now: it imports re
print(json.dumps({"fields": out, "modules": after_ops, "at_hello": at_hello, "new": new}))
"""


def _run(mode: str) -> dict:
    r = subprocess.run([sys.executable, "-c", FIELDS, mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_agent_does_not_import_typing_and_its_wire_types_do_not_depend_on_it():
    plain, typed = _run("plain"), _run("typing-first")
    # typing is a noticeable part of the agent's start inside an emulated guest
    assert "typing" not in plain["modules"]
    # Without typing loaded, dataclasses cannot tell a string `ClassVar[...]`
    # annotation from a field: constants must stay unannotated.
    assert plain["fields"] == typed["fields"]
    for name, fields in plain["fields"].items():
        assert not {"KIND", "REPLY", "STREAM", "TAGS", "VALUE"} & set(fields), name
    assert len(plain["fields"]) > 60  # every family's types were seen
    # Loaded only when an op needs them (inspect: see provium.agent.startup).
    for heavy in ("subprocess", "ctypes", "queue", "ast", "dis", "tokenize", "re._compiler", "_sre"):
        assert heavy not in plain["modules"], heavy


# op family -> the first op of it the script above sends
FAMILIES = {"clock": "get_time", "procs": "exec", "files": "stat", "batch": "batch_exec", "streams": "fd_stream",
            "syscalls": "read_mem", "workers": "worker_kill"}


def test_each_op_family_loads_on_its_first_op_and_not_at_start():
    run = _run("plain")
    at_hello = set(run["at_hello"])
    # The handshake needs only the core wire types and the kind table.
    assert {"provium.protocol.core", "provium.protocol.kinds", "provium.agent.ops"} <= at_hello
    for later in ("provium.protocol.messages", "provium.protocol.types", "provium.agent.children",
                  "provium.protocol.ops_control"):
        assert later not in at_hello, later
    for family, first_op in FAMILIES.items():
        handlers, types = f"provium.agent.{family}", f"provium.protocol.ops_{family}"
        assert handlers not in at_hello and types not in at_hello, family
        assert handlers in run["new"][first_op] or family == "procs" and handlers in run["new"]["exec"], family
        assert types in run["new"][first_op] or types in at_hello, family
    # An exec needs the process family, not the others' (workers: only a worker's handles).
    assert {m for m in run["new"]["exec"] if m.startswith("provium.")} == {
        "provium.agent.procs", "provium.protocol.ops_procs", "provium.agent.children"}
    assert "provium.agent.files" not in run["new"]["read_file"]  # stat loaded it already


def _fresh_interpreter(code: str) -> str:
    """Run `code` in a new interpreter (a clean sys.modules); its stdout, once it exited cleanly."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_deferred_module_loads_on_first_use():
    code = (
        "import sys\n"
        "from provium.agent.startup import defer_inspect\n"
        "defer_inspect()\n"
        "import dataclasses, inspect\n"
        "assert 'ast' not in sys.modules\n"
        "@dataclasses.dataclass\n"
        "class Undocumented:\n"
        "    a: int\n"
        "print(Undocumented.__doc__, inspect.signature(Undocumented), 'ast' in sys.modules)\n"
    )
    out = _fresh_interpreter(code)
    assert out.split("\n")[0] == "Undocumented(a: int) (a: int) -> None True"


def test_deferred_copy_still_serves_dataclasses_asdict_and_replace():
    code = (
        "import sys\n"
        "from provium.agent.startup import defer_inspect\n"
        "defer_inspect()\n"
        "import dataclasses\n"
        "assert 'weakref' not in sys.modules\n"
        "@dataclasses.dataclass\n"
        "class P:\n"
        "    '''A point.'''\n"
        "    a: list\n"
        "p = P([1, [2]])\n"
        "d = dataclasses.asdict(p)\n"
        "assert d == {'a': [1, [2]]} and d['a'] is not p.a\n"
        "import copy\n"
        "print(copy.deepcopy(p) == p, copy.copy(p) is not p, 'weakref' in sys.modules)\n"
    )
    out = _fresh_interpreter(code)
    assert out.split() == ["True", "True", "True"]


def test_deferred_re_compiles_the_pattern_of_dataclasses_on_first_use_and_serves_everyone_else():
    code = (
        "import sys\n"
        "from provium.agent.startup import defer_inspect\n"
        "defer_inspect()\n"
        "import dataclasses\n"
        "assert '_sre' not in sys.modules\n"
        "@dataclasses.dataclass\n"
        "class Real:\n"
        "    \"\"\"Real annotations: the pattern is not used.\"\"\"\n"
        "    a: int\n"
        "assert '_sre' not in sys.modules\n"
        "@dataclasses.dataclass\n"
        "class Strings:\n"
        "    \"\"\"String annotations: dataclasses matches them (an InitVar is no field).\"\"\"\n"
        "    a: 'int'\n"
        "    b: 'dataclasses.InitVar[int]' = 0\n"
        "import re\n"
        "print([f.name for f in dataclasses.fields(Strings)], '_sre' in sys.modules,"
        " isinstance(re.compile('a+'), re.Pattern), re.sub('b+', 'c', 'abba'))\n"
    )
    out = _fresh_interpreter(code)
    assert out.split() == ["['a']", "True", "True", "aca"]


def test_the_guests_oom_protection_does_not_load_the_process_machinery():
    """guest.main protects the agent from the OOM killer at start-up; the flag children.py
    reads lives in base.py, so children loads with the first process op, not then."""
    code = (
        "import os, sys\n"
        "from provium.agent import base, guest\n"
        "assert guest._write_oom_adj()\n"
        "print(base.OOM_PROTECTED == (open('/proc/self/oom_score_adj').read().strip() == '-1000'),"
        " 'provium.agent.children' in sys.modules)\n"
    )
    out = _fresh_interpreter(code)
    assert out.split() == ["True", "False"]

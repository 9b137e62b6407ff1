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
import json, socket, threading, dataclasses
from provium.agent import AgentState, serve
from provium.protocol import envelope, messages, types
from provium.protocol.framing import encode_frame, read_frame
# Serve a few ops: answering them must not pull in what start-up avoided.
a, b = socket.socketpair()
t = threading.Thread(target=serve, args=(b, b, AgentState(local=True)))
t.start()
rf = a.makefile("rb")
for i, (kind, data) in enumerate([("hello", {"protocol_version": 1}), ("get_time", None),
                                   ("exec", {"cmd": "true"}), ("stat", {"path": "/"}),
                                   ("read_file", {"path": "/proc/self/stat"})]):
    a.sendall(encode_frame({"ch": i, "kind": kind, "data": data}))
    assert read_frame(rf)["kind"] != "agent_error"
a.shutdown(socket.SHUT_WR)
t.join()
out = {}
for mod in (messages, types, envelope):
    for name, obj in vars(mod).items():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__:
            out[f"{mod.__name__}.{name}"] = [f.name for f in dataclasses.fields(obj)]
print(json.dumps({"fields": out, "modules": sorted(sys.modules)}))
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
    # Loaded only when an op needs them (inspect: see provium.agent.startup).
    for heavy in ("subprocess", "ctypes", "queue", "ast", "dis", "tokenize"):
        assert heavy not in plain["modules"], heavy


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
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "Undocumented(a: int) (a: int) -> None True"


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
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]

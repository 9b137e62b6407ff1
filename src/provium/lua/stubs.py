"""Editor type stubs for the Lua API (`provium lsp-setup`), generated, never written by hand.

lua-language-server reads LuaCATS annotations (`---@class`, `---@param`, ...)
from a `---@meta` file.  Everything in it is taken from the running code, so it
cannot drift from what a test file can actually call:

* each `Binding` subclass gives a class, and its `LUA_METHODS` the methods;
  parameter names, optional-ness and return types come from the signature of
  the host method the binding forwards to (`host/`), when there is one;
* the Lua-defined globals (`test`, `todo`, `wait_until`) and the test context's
  methods are read out of a fresh Lua state with `debug.getlocal`, which gives
  a Lua function's parameter names;
* option tables come from the key lists the argument checkers use.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..host import bootopts
from ..host import systemd as host_systemd
from ..host.batch import Batch
from ..host.clock import Clock
from ..host.console import Console
from ..host.disk import Disk
from ..host.file import File
from ..host.lab import Lab
from ..host.process import Process
from ..host.results import RunResult
from ..host.streams import Stream
from ..host.syscalls import PendingSyscall
from ..host.vm import VM, WORKER_KEYS
from ..host.worker import Worker
from . import disk as lua_disk
from . import lab as lua_lab
from . import objects
from . import state as _state  # noqa: F401  (imports every binding module, so the walk sees them all)
from .binding import Binding
from .runtime import LuaEnv

META_DIR = ".provium-meta"
STUB_NAME = "types.lua"
USER_GLOBALS = ("test", "todo", "wait_until", "provium", "json")

# The host class behind each binding: where parameter names and return types come from.
HOST_OF: dict[type, type] = {
    objects.VmBinding: VM, lua_lab.LabBinding: Lab, objects.RunResultBinding: RunResult,
    objects.ProcessBinding: Process, objects.FileBinding: File, objects.StreamBinding: Stream,
    objects.ConsoleBinding: Console, objects.WorkerBinding: Worker, objects.ClockBinding: Clock,
    objects.PendingBinding: PendingSyscall, objects.BatchBinding: Batch, lua_disk.DiskBinding: Disk,
}

# Python annotations (as written) -> Lua types.
PY_TO_LUA = {
    "bytes": "string", "str": "string", "int": "integer", "float": "number", "bool": "boolean",
    "None": "nil", "dict": "table", "list": "table", "tuple": "table", "Mapping": "table",
    "RunResult": "provium.RunResult", "VM": "provium.Vm", "Process": "provium.Process", "File": "provium.File",
    "Tail": "provium.Stream", "Stream": "provium.Stream", "ConsoleStream": "provium.Stream",
    "Console": "provium.Console", "Worker": "provium.Worker", "Clock": "provium.Clock",
    "PendingSyscall": "provium.Pending", "Lab": "provium.Lab", "Disk": "provium.Disk",
}

# Option tables: their keys are the checkers' own lists.
OPTION_TABLES: dict[str, tuple[str, ...]] = {
    "provium.RunOpts": objects.RUN_OPT_KEYS,
    "provium.BootOpts": bootopts.BOOT_KEYS,
    "provium.WorkerOpts": WORKER_KEYS,
    "provium.ConsoleWriteOpts": ("timeout",),
    "provium.TailOpts": ("start", "from"),
    "provium.WaitOpts": ("timeout", "interval", "desc"),
    "provium.TestMeta": ("tags", "slow", "skip", "timeout", "spec"),
    "provium.WaitUnitOpts": host_systemd.WAIT_KEYS,
    "provium.JournalOpts": host_systemd.JOURNAL_KEYS,
}
OPTION_PARAMS = {  # (lua class, method) -> the option table its `opts` parameter takes
    ("provium.Vm", "run"): "provium.RunOpts", ("provium.Vm", "run_async"): "provium.RunOpts",
    ("provium.Worker", "run"): "provium.RunOpts", ("provium.Worker", "run_async"): "provium.RunOpts",
    ("provium.Vm", "boot"): "provium.BootOpts", ("provium.Lab", "vm"): "provium.BootOpts",
    ("provium.Vm", "spawn_worker"): "provium.WorkerOpts", ("provium.Console", "write"): "provium.ConsoleWriteOpts",
    ("provium.Vm", "tail_file"): "provium.TailOpts",
    ("provium.Vm", "wait_unit"): "provium.WaitUnitOpts", ("provium.Vm", "journal"): "provium.JournalOpts",
}


def lua_class(binding: type) -> str:
    return "provium." + binding.__name__.removesuffix("Binding")


def _local(cls_name: str) -> str:
    """The stub's local table for a class (`provium.Vm` -> `provium_Vm`)."""
    return cls_name.replace(".", "_")


def bindings() -> list[type[Binding]]:
    """Every Binding subclass a test can meet: those with Lua methods (the runtime's
    private sample has none)."""
    out: list[type[Binding]] = []
    todo = list(Binding.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if cls.LUA_METHODS:
            out.append(cls)
    return sorted(set(out), key=lambda c: c.__name__)


def _lua_type(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = []
    for alt in (a.strip() for a in text.split("|")):
        base = alt.strip("'\"").split("[")[0].split(".")[-1]
        parts.append(PY_TO_LUA.get(base, "any"))
    if "any" in parts:
        return "any"
    return "|".join(dict.fromkeys(parts))


def _host_method(binding: type, name: str) -> Callable | None:
    host = HOST_OF.get(binding)
    if host is None:
        return None
    for attr in (name, name + "_"):
        fn = getattr(host, attr, None)
        if callable(fn):
            return fn
    return None


def _method_lines(cls_name: str, binding: type, name: str) -> list[str]:
    fn = _host_method(binding, name)
    lines: list[str] = []
    params: list[str] = []
    ret = "any"
    if fn is not None:
        doc = inspect.getdoc(fn)
        if doc:
            lines += ["--- " + ln if ln else "---" for ln in doc.splitlines()]
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            for p in list(sig.parameters.values())[1:]:
                if p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY):
                    continue
                if p.kind == p.VAR_POSITIONAL:
                    lines.append("---@param ... any")
                    params.append("...")
                    continue
                opt = "?" if p.default is not p.empty else ""
                typ = OPTION_PARAMS.get((cls_name, name)) if p.name == "opts" else None
                lines.append(f"---@param {p.name}{opt} {typ or _lua_type(p.annotation)}")
                params.append(p.name)
            ret = _lua_type(sig.return_annotation)
    else:
        lines.append("---@param ... any")
        params.append("...")
    if ret not in ("nil", "any"):
        lines.append(f"---@return {ret}")
    elif ret == "any":
        lines.append("---@return any")
    lines.append(f"function {_local(cls_name)}:{name}({', '.join(params)}) end")
    return lines


def _lua_functions(env: LuaEnv) -> dict[str, list[tuple[str, list[str]]]]:
    """Parameter names of the Lua-defined globals and of the test context's methods."""
    listing = env.rt.execute(b"""
      local t = _provium_make_t("x", {})
      local function params(f)
        local out, i = {}, 1
        while true do
          local n = debug.getlocal(f, i)
          if not n then break end
          out[#out + 1] = n; i = i + 1
        end
        if debug.getinfo(f, "u").isvararg then out[#out + 1] = "..." end
        return out
      end
      local res = {globals = {}, context = {}, json = {}}
      for _, name in ipairs({"test", "todo", "wait_until"}) do
        res.globals[#res.globals + 1] = {name, params(_G[name])}
      end
      for k, f in pairs(getmetatable(t).__index) do
        if type(f) == "function" then res.context[#res.context + 1] = {k, params(f)} end
      end
      for k, f in pairs(json) do
        if type(f) == "function" then res.json[#res.json + 1] = {k, params(f)} end
      end
      return res
    """)

    def conv(tbl: Any) -> list[tuple[str, list[str]]]:
        out = []
        for i in range(1, len(tbl) + 1):
            name, ps = tbl[i][1], tbl[i][2]
            out.append((name.decode(), [ps[j].decode() for j in range(1, len(ps) + 1)]))
        return sorted(out)

    return {k: conv(listing[k.encode()]) for k in ("globals", "context", "json")}


def _new_env() -> LuaEnv:
    from . import json as lua_json

    env = LuaEnv(timed_out=lambda: False, timeout_message=lambda: "", sleep=lambda s: None, now=lambda: 0.0)
    lua_json.install(env)
    return env


def generate() -> str:
    """The whole `---@meta` stub file."""
    from ..host.results import RunResult as RR

    env = _new_env()
    lua = _lua_functions(env)
    out = ["---@meta provium",
           "-- Generated by `provium lsp-setup` from provium's Lua bindings; do not edit.",
           "-- Regenerate after upgrading provium.", ""]

    for cls, keys in OPTION_TABLES.items():
        out.append(f"---@class {cls}")
        out += [f"---@field {k}? any" for k in keys]
        out.append("")

    for b in bindings():
        cname = lua_class(b)
        out.append(f"---@class {cname}")
        if b is objects.RunResultBinding:
            hints = {f: RR.__annotations__.get(f, "any") for f in b.FIELDS}
            out += [f"---@field {f} {_lua_type(h)}" for f, h in hints.items()]
        if b is lua_lab.LabBinding:
            out += [f"---@field {k} any" for k in lua_lab.CONFIG_KEYS]
            out += ["---@field pack fun(...): table", "---@field unpack fun(t: table): ...",
                    "---@field [string] provium.Vm|provium.Lab  a VM or sub-lab by name"]
        out.append(f"local {_local(cname)} = {{}}")
        out.append("")
        for name in sorted(b.LUA_METHODS):
            out += _method_lines(cname, b, name)
            out.append("")

    out.append("---@class provium.TestContext")
    out.append("---@field name string")
    out.append("---@field meta provium.TestMeta")
    out.append("local provium_TestContext = {}")
    out.append("")
    for name, params in lua["context"]:
        shown = params[1:]  # `t` itself (the colon)
        out += [f"---@param {p}{'?' if p in ('msg', 'reason') else ''} any" for p in shown]
        out.append(f"function provium_TestContext:{name}({', '.join(shown)}) end")
        out.append("")

    sigs = {
        "test": "---@param name string\n---@param a provium.TestMeta|fun(t: provium.TestContext)\n"
                "---@param b? fun(t: provium.TestContext)",
        "wait_until": "---@param pred fun(): any\n---@param opts? provium.WaitOpts\n---@return any",
        "todo": "---@param reason? string",
    }
    for name, params in lua["globals"]:
        out.append(sigs.get(name, "\n".join(f"---@param {p} any" for p in params)))
        out.append(f"function {name}({', '.join(params)}) end")
        out.append("")

    out.append("json = {}")
    for name, params in lua["json"]:
        out.append("---@param ... any")
        out.append("---@return any")
        out.append(f"function json.{name}({', '.join(params)}) end")
    out.append("")
    out.append("---@type provium.Lab")
    out.append("provium = {}")
    out.append("")
    return "\n".join(out)


def luarc() -> dict:
    return {
        "runtime.version": "Lua 5.4",
        "workspace.library": [META_DIR],
        "workspace.checkThirdParty": False,
        "diagnostics.disable": ["lowercase-global"],
        "diagnostics.globals": list(USER_GLOBALS),
    }


def write(directory: str | Path, *, force: bool = False) -> list[str]:
    """Write `<dir>/.provium-meta/types.lua` and `<dir>/.luarc.json`; returns what to
    tell the user, one line each.  An existing `.luarc.json` is kept unless `force`."""
    d = Path(directory)
    if not d.is_dir():
        raise NotADirectoryError(f"`{d}` is not a directory")
    meta = d / META_DIR
    meta.mkdir(exist_ok=True)
    stub = meta / STUB_NAME
    stub.write_text(generate())
    said = [f"  wrote {stub}"]
    rc = d / ".luarc.json"
    text = json.dumps(luarc(), indent=2) + "\n"
    if rc.exists() and not force:
        said.append(f"  kept {rc} (it exists; pass --force to replace it, or merge these settings):")
        said += ["    " + ln for ln in text.splitlines()]
    else:
        rc.write_text(text)
        said.append(f"  wrote {rc}")
    said.append("Reload your editor's Lua language server to pick the stubs up.")
    return said

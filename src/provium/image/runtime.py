"""The Python runtime the agent overlay carries, taken from the host.

The guest gets a host interpreter of the same major.minor version as the one
running provium, the shared libraries it links (run through its own `ld-linux`
with `--library-path`, so nothing lands in the guest's /lib), the extension
modules the agent imports, and one stored zip (uncompressed: zlib itself may be
an extension module) of precompiled stdlib and agent modules.

Which stdlib modules: measured, not guessed.  A host subprocess of the chosen
interpreter imports every agent module plus every module named by an `import`
anywhere in the agent's source (function-level ones too), and we ship what
`sys.modules` then holds.  The same subprocess compiles everything, so the
bytecode is the guest interpreter's own, and records the code `dataclasses`
compiles while the agent imports (see guest_boot.py).
"""

from __future__ import annotations

import ast
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImageError

GUEST_LIB = "/provium/lib"
GUEST_PYTHON = "/provium/bin/python3"
GUEST_PYDIR = f"{GUEST_LIB}/python3"
GUEST_DYNLOAD = f"{GUEST_PYDIR}/lib-dynload"
GUEST_SITE = f"{GUEST_PYDIR}/site-packages"
GUEST_ZIP = f"{GUEST_LIB}/python3.zip"
GUEST_CODE_CACHE = f"{GUEST_PYDIR}/code-cache.bin"
GUEST_PRELOAD = f"{GUEST_PYDIR}/boot-modules.bin"
BOOT_MODULE = "provium_boot"
# What the guest runs as its script: `python3 run.pyc module:function ARGS...`.  Bytecode,
# not `-c` text: nothing is compiled at start-up (guest_boot.py says why that matters).
GUEST_RUN = f"{GUEST_PYDIR}/run.pyc"
RUN_SOURCE = f"import sys\nimport {BOOT_MODULE}\n{BOOT_MODULE}.run(sys.argv.pop(1))\n"
# What the agent imports in a guest before it serves (provium.agent.guest.main): its
# modules are preloaded (guest_boot.py).  A module missing here still works, from the zip.
BOOT_IMPORTS = ("provium.agent.guest", "provium.agent.server", "provium.agent.state",
                "threading", "fcntl", "struct", "_socket")
# What the agent imports on its first ops: each op family's handlers and wire types
# (agent/ops.py, protocol/kinds.py), what a large write_file needs, and the stdlib
# modules ops import where they need them (a worker's spawn, a raw system call).  Also preloaded
# (no op goes to the zip), but kept marshalled until imported: unmarshalling them at
# start-up would give back much of what importing them lazily saves.
LAZY_IMPORTS = ("provium.agent.files", "provium.agent.procs", "provium.agent.streams", "provium.agent.clock",
                "provium.agent.syscalls", "provium.agent.workers", "provium.agent.batch",
                "provium.agent.bulkwrite", "provium.protocol.views", "provium.protocol.ops_control", "subprocess",
                "ctypes")
# `python3._pth` beside the interpreter fixes sys.path and implies isolated mode and
# no `site`: the guest's PYTHON* variables and any Python of its own cannot interfere.
PTH = "../lib/python3-start.zip\n../lib/python3.zip\n../lib/python3/lib-dynload\n../lib/python3/site-packages\n"
# What the interpreter imports from sys.path before any of our code runs (the codecs),
# and our boot shim, in a zip of their own: zipimport reads an archive's whole
# directory, in Python, on its first import from it, and under TCG a hundred entries
# cost tens of milliseconds.  The full zip's directory is read only when a module
# that is not preloaded (guest_boot.py) is first imported.
GUEST_START_ZIP = f"{GUEST_LIB}/python3-start.zip"
START_PACKAGES = ("encodings",)

# Imported by the interpreter or by `-m` before any agent code runs, or lazily
# by stdlib code the agent calls (so an import scan of the agent cannot see them).
STDLIB_EXTRA = (
    "encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.utf_8_sig",
    "traceback", "linecache", "tokenize", "ctypes", "subprocess", "selectors", "signal",
    "threading", "socket", "select", "errno", "fcntl", "struct", "json", "json.decoder",
    "json.encoder", "json.scanner", "marshal",
)

AGENT_PACKAGE = "provium.agent"


@dataclass
class Runtime:
    """Guest path -> (bytes, mode) of everything the runtime needs, and how to start it."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    loader: str = ""  # guest path of ld-linux
    python: Path | None = None  # the host interpreter shipped
    modules: list[str] = field(default_factory=list)  # stdlib modules in the zip

    def argv(self, target: str, *args: str) -> list[str]:
        """Guest argv calling `target` ("module:function") through the bundled loader."""
        return [self.loader, "--library-path", GUEST_LIB, GUEST_PYTHON, "-X", "utf8", GUEST_RUN, target, *args]


def _version_of(python: Path) -> str | None:
    try:
        out = subprocess.run([str(python), "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def running_python() -> Path:
    """The real interpreter binary behind this process (a venv's python is a symlink to it)."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    path = Path(os.path.realpath(exe))
    if not path.is_file():
        raise ImageError(f"cannot locate the host Python interpreter (sys.executable = {sys.executable!r})")
    return path


def host_python() -> Path:
    """The interpreter to ship (see _choose_python); remembered per process and setting."""
    return _choose_python(os.environ.get("PROVIUM_GUEST_PYTHON"))


@functools.lru_cache(maxsize=None)
def _choose_python(env: str | None) -> Path:
    """The interpreter to ship.

    $PROVIUM_GUEST_PYTHON if set; else the distribution's `/usr/bin/pythonX.Y` when
    it is the same X.Y as ours (distributions build it with optimisations and a
    static libpython, which starts markedly faster under TCG); else our own.
    """
    want = "%d.%d" % sys.version_info[:2]
    if env:
        p = Path(os.path.realpath(env))
        if _version_of(p) != want:
            raise ImageError(f"$PROVIUM_GUEST_PYTHON `{env}` is not a Python {want} (the agent's bytecode needs the same version)")
        return p
    system = Path(f"/usr/bin/python{want}")
    if system.is_file() and os.access(system, os.X_OK) and _version_of(system) == want and elf_deps(system)[1]:
        return Path(os.path.realpath(system))
    return running_python()


def elf_deps(path: Path) -> tuple[list[Path], Path | None]:
    """(shared libraries, loader) that `path` needs, as resolved on this host by `ldd`."""
    ldd = shutil.which("ldd")
    if not ldd:
        raise ImageError("`ldd` not found on this host (needed to collect the agent's Python runtime)\n"
                         "  → apt-get install libc-bin")
    proc = subprocess.run([ldd, str(path)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return [], None
    if proc.returncode != 0:
        raise ImageError(f"`ldd {path}` failed: {text.strip()}")
    libs: list[Path] = []
    loader: Path | None = None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            raise ImageError(f"{path}: needs `{line.split()[0]}`, which this host cannot resolve")
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target.startswith("/"):
                libs.append(Path(target))
        elif line.startswith("/"):
            loader = Path(line.split(" (")[0].strip())
    return libs, loader


# Libraries glibc loads with dlopen() rather than linking, so `ldd` never lists them:
# libgcc_s does the unwinding behind pthread_exit, which CPython calls to end daemon
# threads at exit (without it the interpreter aborts: "libgcc_s.so.1 must be installed").
DLOPENED = ("libgcc_s.so.1",)


def dlopened_libs(libs: dict[str, Path]) -> list[Path]:
    """The DLOPENED libraries found beside the host's libc (none when libc is not in `libs`)."""
    libc = libs.get("libc.so.6")
    if libc is None:
        return []
    return [p for p in (libc.parent / name for name in DLOPENED) if p.exists()]


def _strip(data: bytes, name: str) -> bytes:
    """Drop symbols and debug info (a pyenv libpython shrinks ~4x); unchanged without `strip`."""
    strip = shutil.which("strip")
    if not strip:
        return data
    with tempfile.TemporaryDirectory(prefix="provium-strip-") as d:
        src, dst = Path(d) / name, Path(d) / (name + ".out")
        src.write_bytes(data)
        r = subprocess.run([strip, "--strip-unneeded", "-o", str(dst), str(src)], capture_output=True)
        return dst.read_bytes() if r.returncode == 0 and dst.exists() else data


def _src_root() -> Path:
    import provium

    return Path(provium.__file__).resolve().parent.parent


def _agent_files(src_root: Path) -> list[Path]:
    """The agent package's own sources (what it needs of provium.protocol is measured)."""
    d = src_root.joinpath(*AGENT_PACKAGE.split("."))
    return sorted(p for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def _input_files(src_root: Path) -> list[Path]:
    """Sources that may end up in the overlay: agent, protocol, the package root and its
    error root (protocol and agent import it), the boot shim."""
    proto = src_root / "provium" / "protocol"
    return [src_root / "provium" / "__init__.py", src_root / "provium" / "errors.py", *_agent_files(src_root),
            *sorted(p for p in proto.rglob("*.py") if "__pycache__" not in p.parts),
            Path(__file__).with_name("guest_boot.py")]


def _module_name(src_root: Path, path: Path) -> str:
    parts = list(path.relative_to(src_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_in(path: Path, modname: str) -> set[str]:
    """Every absolute module an `import`/`from ... import` in the file names."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except SyntaxError as exc:
        raise ImageError(f"agent source `{path}` does not parse: {exc}") from exc
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
            elif node.level:
                base = modname.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
    return out


# Runs in the interpreter being shipped.  argv[1]: JSON request; argv[2]: output file.
_MEASURE = r"""
import builtins, sys
recorded = {}
recorded_eval = {}
real_exec, real_eval = builtins.exec, builtins.eval
def recording(table, real, mode):
    def run(source, globals=None, locals=None):
        if isinstance(source, str):
            code = table.get(source)
            if code is None:
                code = table[source] = compile(source, "<string>", mode, dont_inherit=True)
            return real(code, globals, locals)
        return real(source, globals, locals)
    return run
recording_exec = recording(recorded, real_exec, "exec")
recording_eval = recording(recorded_eval, real_eval, "eval")
import collections  # before functools (json imports it), which makes a namedtuple as it is imported
collections.eval = recording_eval
import importlib, json
req = json.loads(sys.argv[1])
sys.path[:0] = req["paths"]
import dataclasses
dataclasses.exec = recording_exec
failed = {}
for name in req["modules"]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # `from x import name` where name is no module, etc.
        failed[name] = repr(exc)
modules = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
# The codec evaluates each wire type's field annotations on first use of the type
# (codec._resolve): compiled here, every one, so no op compiles them in the guest.
for name in sorted(modules):
    if name.startswith("provium.protocol."):
        for obj in list(vars(sys.modules[name]).values()):
            if isinstance(obj, type) and obj.__module__ == name and dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    if isinstance(f.type, str) and f.type not in recorded_eval:
                        recorded_eval[f.type] = compile(f.type, "<string>", "eval", dont_inherit=True)
# What the measuring itself needs is imported only now, so it is not counted.
import importlib.util, marshal, os, sysconfig
from importlib._bootstrap_external import _code_to_hash_pyc
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
def pyc(path, guest_name):
    with open(path, "rb") as f:
        src = f.read()
    code = compile(src, guest_name, "exec", dont_inherit=True)
    # unchecked hash-based: never revalidated against a source (the guest has none)
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(src), checked=False))
compiled = {}
for name, file in modules.items():
    if not file or not file.endswith(".py"):
        continue
    real = os.path.realpath(file)
    if real.startswith(stdlib + os.sep) and "site-packages" not in real and "dist-packages" not in real:
        rel = real[len(stdlib) + 1:]
        compiled["stdlib/" + rel[:-3] + ".pyc"] = pyc(real, req["zip"] + "/" + rel)
for path, guest_name in req["compile"]:
    compiled[path] = pyc(path, guest_name)
for key, (source, guest_name) in req.get("sources", {}).items():
    code = compile(source, guest_name, "exec", dont_inherit=True)
    compiled[key] = bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source.encode()), checked=False))
dynload = os.path.join(stdlib, "lib-dynload")
with open(sys.argv[2], "wb") as f:
    marshal.dump({"modules": modules, "failed": failed, "stdlib": stdlib, "dynload": dynload,
                  "compiled": compiled, "code_cache": marshal.dumps({"exec": recorded, "eval": recorded_eval})}, f)
"""


# Runs in the interpreter being shipped, as the guest starts: argv[1] sys.path
# entries (os.pathsep-separated), argv[2] guest_boot.py, argv[3] the output file,
# then the modules to import at start, `--`, and those imported on first ops.  Writes
# the names of the modules that got imported, at start and then on first ops.
_BOOT_SET = r"""
import sys
ACCELERATED = ACCELERATED_REPR
before = set(sys.modules)
# The source texts compiled at start (no code cache here): dataclasses' methods and
# namedtuple's; the code cache serves these at once and the rest on a first op.
compiled = []
def audit(event, args):
    if event == "compile" and args[1] == "<string>" and isinstance(args[0], (str, bytes)):
        compiled.append(args[0] if isinstance(args[0], str) else args[0].decode())
sys.addaudithook(audit)
sys.path[:0] = sys.argv[1].split(":")
boot = {"__name__": "provium_boot", "__builtins__": __builtins__}
with open(sys.argv[2]) as f:
    exec(compile(f.read(), "provium_boot", "exec"), boot)
boot["install"]("/nonexistent")  # what the guest does first (no data files here)
sep = sys.argv.index("--")
for name in sys.argv[4:sep]:
    __import__(name)
import marshal
def loaded_by_path(m):  # not a stand-in (startup.defer), not frozen or built in
    spec = getattr(m, "__spec__", None)
    return spec is not None and spec.origin not in (None, "frozen", "built-in")
names = sorted(n for n, m in sys.modules.items() if n not in before and loaded_by_path(m))
started = set(sys.modules)
start_sources = set(compiled)
import dataclasses
for name in names:  # the field annotations the codec evaluates, of the types loaded at start
    if name.startswith("provium.protocol."):
        for obj in list(vars(sys.modules[name]).values()):
            if isinstance(obj, type) and obj.__module__ == name and dataclasses.is_dataclass(obj):
                start_sources.update(f.type for f in dataclasses.fields(obj) if isinstance(f.type, str))
for name in sys.argv[sep + 1:]:
    __import__(name)
lazy = sorted(n for n, m in sys.modules.items() if n not in started and n not in before and loaded_by_path(m))
# A module that ends by replacing its pure-Python body with its C accelerator
# (datetime: `from _datetime import *`) gets a stand-in that does only that last
# step, if the result is the same namespace holding the same objects.
shims = {}
for name, accel_name in ACCELERATED.items():
    real = sys.modules.get(name)
    accel = sys.modules.get(accel_name)
    if name not in names or real is None or accel is None:
        continue
    ignored = {"__name__", "__loader__", "__spec__", "__file__", "__cached__", "__builtins__", "__package__", "__doc__"}
    mine = set(vars(real)) - ignored
    extra = mine - set(vars(accel)) - {"__all__"}
    if any(type(vars(real)[k]) is not type(sys) or vars(real)[k].__name__ != k for k in extra):
        continue
    lines = [f"import {k}" for k in sorted(extra)] + [f"from {accel_name} import *"]
    if real.__doc__ is not None and real.__doc__ == accel.__doc__:
        lines.append(f"from {accel_name} import __doc__")
    if "__all__" in mine:
        lines.append(f"__all__ = {real.__all__!r}")
    source = "\n".join(lines) + "\n"
    ns = {"__name__": name, "__builtins__": __builtins__}
    exec(compile(source, name, "exec"), ns)
    if (set(ns) - ignored == mine and ns.get("__doc__") == real.__doc__
            and all(ns[k] is vars(real)[k] or (k == "__all__" and ns[k] == real.__all__) for k in mine)):
        shims[name] = source
with open(sys.argv[3], "wb") as f:
    marshal.dump({"modules": names, "lazy": lazy, "shims": shims, "start_sources": sorted(start_sources)}, f)
"""
# stdlib module -> the C module it ends up being (see _BOOT_SET): in the guest its
# pure-Python body would be unmarshalled and run only to be replaced.
ACCELERATED = {"datetime": "_datetime"}


def _boot_set(python: Path, paths: list[str]) -> dict:
    """{"modules": the start-up modules, "lazy": those of the first ops, "shims": {module: stand-in
    source}, "start_sources": the source texts compiled at start} (see _BOOT_SET)."""
    import marshal

    with tempfile.TemporaryDirectory(prefix="provium-measure-") as d:
        out = Path(d) / "out.marshal"
        code = _BOOT_SET.replace("ACCELERATED_REPR", repr(ACCELERATED))
        proc = subprocess.run([str(python), "-I", "-S", "-X", "utf8", "-c", code, os.pathsep.join(paths),
                               str(Path(__file__).with_name("guest_boot.py")), str(out), *BOOT_IMPORTS, "--", *LAZY_IMPORTS],
                              capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              cwd=d)
        if proc.returncode != 0 or not out.exists():
            raise ImageError(f"measuring the agent's start-up imports with {python} failed:\n{proc.stderr.strip()[-2000:]}")
        return marshal.loads(out.read_bytes())


def _preload_table(names: list[str], zip_entries: dict[str, bytes], site: dict[str, bytes],
                   shims: dict[str, str] | None = None, lazy: list[str] | tuple[str, ...] = ()) -> bytes:
    """The PRELOAD file of guest_boot.py: the start-up modules' code, paths relative to GUEST_LIB;
    a module in `shims` gets its stand-in's code (the zip keeps the real one).  A module in
    `lazy` (imported on a first op) keeps its code marshalled, unmarshalled when imported."""
    import marshal

    zip_rel = GUEST_ZIP[len(GUEST_LIB) + 1:]
    site_rel = GUEST_SITE[len(GUEST_LIB) + 1:]
    table = {}
    start = set(names)
    for name in [*names, *(n for n in lazy if n not in start)]:
        rel = name.replace(".", "/")
        for entries, where in ((zip_entries, zip_rel), (site, site_rel)):
            if f"{rel}/__init__.pyc" in entries:
                pyc, origin, search = entries[f"{rel}/__init__.pyc"], f"{where}/{rel}/__init__.pyc", f"{where}/{rel}"
            elif f"{rel}.pyc" in entries:
                pyc, origin, search = entries[f"{rel}.pyc"], f"{where}/{rel}.pyc", None
            else:
                continue
            code = marshal.loads(pyc[16:])  # 16: the pyc header
            if shims and name in shims:
                code = compile(shims[name], code.co_filename, "exec", dont_inherit=True)
            table[name] = (origin, search, code if name in start else marshal.dumps(code))
            break
    return marshal.dumps(table)


def _code_cache(recorded: bytes, start: set[str]) -> bytes:
    """The CODE_CACHE file of guest_boot.py: {"exec": {source: code}, "eval": {...}} for the
    source texts compiled at start, and under "later" the rest (the op families' types),
    marshalled once more: unmarshalled on the first op that needs one of them."""
    import marshal

    cache = marshal.loads(recorded)
    now: dict = {"exec": {}, "eval": {}}
    later: dict = {"exec": {}, "eval": {}}
    for mode in ("exec", "eval"):
        for source, code in cache.get(mode, {}).items():
            (now if source in start else later)[mode][source] = code
    now["later"] = marshal.dumps(later)
    return marshal.dumps(now)


def _measure(python: Path, paths: list[str], names: list[str], compile_files: list[tuple[str, str]],
             sources: dict[str, tuple[str, str]] | None = None) -> dict:
    import marshal

    req = {"paths": paths, "modules": sorted(names), "compile": compile_files, "zip": GUEST_ZIP,
           "sources": sources or {}}
    with tempfile.TemporaryDirectory(prefix="provium-measure-") as d:
        out = Path(d) / "out.marshal"
        # no_debug_ranges: the bytecode shipped carries line numbers but not the column
        # ranges of each instruction (only used to underline the failing expression in a
        # traceback), so the guest has 10% less code to read and unmarshal at start-up.
        proc = subprocess.run([str(python), "-I", "-S", "-X", "utf8", "-X", "no_debug_ranges", "-c", _MEASURE,
                               json.dumps(req), str(out)],
                              capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              cwd=d)
        if proc.returncode != 0 or not out.exists():
            raise ImageError(f"measuring the agent's imports with {python} failed:\n{proc.stderr.strip()[-2000:]}")
        return marshal.loads(out.read_bytes())


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, entries[name])
    return buf.getvalue()


def inputs() -> list[Path]:
    """Host files whose change must rebuild the overlay (for its cache key)."""
    import msgpack

    python = host_python()
    deps = elf_deps(python)[0]
    out = [python, *deps, *dlopened_libs({d.name: d for d in deps}), *_input_files(_src_root()), Path(__file__)]
    out += sorted(p for p in Path(msgpack.__file__).parent.iterdir() if p.suffix in (".py", ".so"))
    return out


def collect() -> Runtime:
    """Gather the runtime files (reads the host; takes a second or two)."""
    import msgpack

    python = host_python()
    src_root = _src_root()
    agent_files = _agent_files(src_root)
    names: set[str] = set(STDLIB_EXTRA) | {"msgpack", "provium.agent.guest", "provium.agent.__main__"}
    for f in agent_files:
        mod = _module_name(src_root, f)
        names.add(mod)
        names |= _imports_in(f, mod)
    msgpack_dir = Path(msgpack.__file__).resolve().parent
    boot_src = Path(__file__).with_name("guest_boot.py")
    # Provium sources are compiled in a second pass, once we know which were imported.
    first = _measure(python, [str(src_root), str(msgpack_dir.parent)], sorted(names), [])
    provium_files = set(agent_files)
    for name, file in first["modules"].items():
        if name.split(".")[0] == "provium" and file:
            provium_files.add(Path(file).resolve())
    compile_files = [(str(f), f"{GUEST_ZIP}/{f.relative_to(src_root).as_posix()}") for f in sorted(provium_files)]
    compile_files.append((str(boot_src), f"{GUEST_ZIP}/{BOOT_MODULE}.py"))
    msgpack_py = sorted(p for p in msgpack_dir.iterdir() if p.suffix == ".py")
    compile_files += [(str(p), f"{GUEST_SITE}/msgpack/{p.name}") for p in msgpack_py]
    m = _measure(python, [str(src_root), str(msgpack_dir.parent)], sorted(names), compile_files,
                 {"run": (RUN_SOURCE, GUEST_RUN[:-1])})

    rt = Runtime(python=python)
    zip_entries: dict[str, bytes] = {}
    for key, data in m["compiled"].items():
        if key.startswith("stdlib/"):
            zip_entries[key[len("stdlib/"):]] = data
    for f in provium_files:
        zip_entries[f.relative_to(src_root).with_suffix(".pyc").as_posix()] = m["compiled"][str(f)]
    start = {f"{BOOT_MODULE}.pyc": m["compiled"][str(boot_src)]}
    for key in [k for k in zip_entries if k.split("/", 1)[0] in START_PACKAGES]:
        start[key] = zip_entries.pop(key)  # the whole package: its __path__ is this zip
    rt.files[GUEST_START_ZIP] = (_zip(start), 0o644)
    rt.files[GUEST_ZIP] = (_zip(zip_entries), 0o644)
    rt.files[GUEST_RUN] = (m["compiled"]["run"], 0o644)
    site = {f"msgpack/{p.stem}.pyc": m["compiled"][str(p)] for p in msgpack_py}
    boot = _boot_set(python, [str(src_root), str(msgpack_dir.parent)])
    rt.files[GUEST_CODE_CACHE] = (_code_cache(m["code_cache"], set(boot["start_sources"])), 0o644)
    rt.files[GUEST_PRELOAD] = (_preload_table(boot["modules"], zip_entries, site, boot["shims"],
                                                                boot["lazy"]), 0o644)
    rt.modules = sorted(n for n, f in m["modules"].items() if f and os.path.realpath(f).startswith(m["stdlib"] + os.sep))

    elf: list[Path] = [python]
    dyn = m["dynload"]
    for name, file in sorted(m["modules"].items()):
        if file and os.path.realpath(file).startswith(dyn + os.sep):
            so = Path(os.path.realpath(file))
            rt.files[f"{GUEST_DYNLOAD}/{so.name}"] = (_strip(so.read_bytes(), so.name), 0o755)
            elf.append(so)
    # msgpack as a directory: its C extension cannot load from a zip.  Should the
    # extension not load in the guest, msgpack falls back to its pure-Python code.
    for p in msgpack_py:
        rt.files[f"{GUEST_SITE}/msgpack/{p.stem}.pyc"] = (m["compiled"][str(p)], 0o644)
    for p in sorted(msgpack_dir.iterdir()):
        if p.suffix == ".so":
            rt.files[f"{GUEST_SITE}/msgpack/{p.name}"] = (_strip(p.read_bytes(), p.name), 0o755)
            elf.append(p)

    libs: dict[str, Path] = {}
    loader: Path | None = None
    for e in elf:
        deps, ld = elf_deps(e)
        for d in deps:
            libs.setdefault(d.name, d)
        loader = loader or ld
    if loader is None:
        raise ImageError(f"{python} is statically linked; provium needs a dynamically linked Python "
                         "(its own loader runs it in the guest)")
    libs.update({p.name: p for p in dlopened_libs(libs) if p.name not in libs})
    for soname, path in sorted(libs.items()):
        rt.files[f"{GUEST_LIB}/{soname}"] = (_strip(path.read_bytes(), soname), 0o755)
    rt.loader = f"{GUEST_LIB}/{loader.name}"
    rt.files[rt.loader] = (loader.read_bytes(), 0o755)
    rt.files[GUEST_PYTHON] = (_strip(python.read_bytes(), "python3"), 0o755)
    rt.files[GUEST_PYTHON + "._pth"] = (PTH.encode(), 0o644)
    return rt

"""The Python runtime the agent overlay carries, taken from the host.

The guest gets the interpreter that runs provium itself (so the bytecode we compile
here is the bytecode it runs), the shared libraries it links, run through its own
`ld-linux` with `--library-path` so nothing lands in the guest's /lib, the
extension modules the agent imports, and one stored (uncompressed: zlib itself may
be an extension module) zip of precompiled stdlib and agent modules.

Which stdlib modules: measured, not guessed.  A host subprocess of the same
interpreter imports every agent module plus every module named by an `import`
anywhere in the agent's source (function-level ones too), and we ship what
`sys.modules` then holds.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImageError

GUEST_ROOT = "provium"  # everything but /sbin/provium-agent lives under /provium
GUEST_LIB = f"/{GUEST_ROOT}/lib"
GUEST_PYTHON = f"/{GUEST_ROOT}/bin/python3"
GUEST_DYNLOAD = f"{GUEST_LIB}/python3/lib-dynload"
GUEST_SITE = f"{GUEST_LIB}/python3/site-packages"
GUEST_ZIP = f"{GUEST_LIB}/python3.zip"
# `python3._pth` beside the interpreter fixes sys.path and implies isolated mode and
# no `site`: the guest's PYTHON* variables and any Python of its own cannot interfere.
PTH = "../lib/python3.zip\n../lib/python3/lib-dynload\n../lib/python3/site-packages\n"

# Imported by the interpreter or by `-m` before any agent code runs, or lazily
# by stdlib code the agent calls (so an import scan of the agent cannot see them).
STDLIB_EXTRA = (
    "runpy", "encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.utf_8_sig",
    "traceback", "linecache", "tokenize", "ctypes", "subprocess", "selectors", "signal",
    "threading", "socket", "select", "errno", "fcntl", "struct", "json", "json.decoder",
    "json.encoder", "json.scanner",
)

AGENT_PACKAGE = "provium.agent"


@dataclass
class Runtime:
    """Guest path -> (bytes, mode) of everything the runtime needs, and how to start it."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    loader: str = ""  # guest path of ld-linux
    modules: list[str] = field(default_factory=list)  # stdlib modules in the zip (for reports)

    def argv(self, *args: str) -> list[str]:
        return [self.loader, "--library-path", GUEST_LIB, GUEST_PYTHON, "-X", "utf8", *args]


def host_python() -> Path:
    """The real interpreter binary behind this process (a venv's python is a symlink to it)."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    path = Path(os.path.realpath(exe))
    if not path.is_file():
        raise ImageError(f"cannot locate the host Python interpreter (sys.executable = {sys.executable!r})")
    return path


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


def _strip(data: bytes, name: str) -> bytes:
    """Drop symbols and debug info (libpython shrinks ~4x); unchanged if `strip` is absent."""
    strip = shutil.which("strip")
    if not strip:
        return data
    import tempfile

    with tempfile.TemporaryDirectory(prefix="provium-strip-") as d:
        src, dst = Path(d) / name, Path(d) / (name + ".out")
        src.write_bytes(data)
        r = subprocess.run([strip, "--strip-unneeded", "-o", str(dst), str(src)], capture_output=True)
        return dst.read_bytes() if r.returncode == 0 and dst.exists() else data


def _agent_source_roots() -> Path:
    import provium

    return Path(provium.__file__).resolve().parent.parent


def _agent_files(src_root: Path) -> list[Path]:
    """The agent package's own sources (what it needs of provium.protocol is measured)."""
    d = src_root.joinpath(*AGENT_PACKAGE.split("."))
    return sorted(p for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def _input_files(src_root: Path) -> list[Path]:
    """Sources that may end up in the overlay: agent, protocol and the package root."""
    proto = src_root / "provium" / "protocol"
    return [src_root / "provium" / "__init__.py", *_agent_files(src_root),
            *sorted(p for p in proto.rglob("*.py") if "__pycache__" not in p.parts)]


def _module_name(src_root: Path, path: Path) -> str:
    rel = path.relative_to(src_root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_in(path: Path, modname: str) -> set[str]:
    """Every absolute module an `import`/`from ... import` in the file names."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except SyntaxError as exc:
        raise ImageError(f"agent source `{path}` does not parse: {exc}") from None
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


_MEASURE = r"""
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[1])
failed = {}
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except Exception as exc:  # `from x import name` where name is not a module, etc.
        failed[name] = repr(exc)
mods = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"modules": mods, "failed": failed}))
"""


def measure_modules(python: Path, paths: list[str], names: list[str]) -> dict[str, str | None]:
    """Run `python` (isolated, no site), import `names`, return sys.modules as {name: file}."""
    proc = subprocess.run([str(python), "-I", "-S", "-X", "utf8", "-c", _MEASURE, json.dumps(paths), json.dumps(sorted(names))],
                          capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if proc.returncode != 0:
        raise ImageError(f"measuring the agent's imports with {python} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)["modules"]


def _pyc(source: bytes, guest_filename: str) -> bytes:
    """An unchecked-hash .pyc: never revalidated against a source (there is none in the guest)."""
    code = compile(source, guest_filename, "exec", dont_inherit=True)
    from importlib._bootstrap_external import _code_to_hash_pyc  # the one stdlib encoder of the pyc header

    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, entries[name])
    return buf.getvalue()


def _rel_in(path: str | None, root: str) -> str | None:
    if not path:
        return None
    p = os.path.realpath(path)
    root = os.path.realpath(root)
    if p.startswith(root + os.sep):
        return p[len(root) + 1:]
    return None


def inputs() -> list[Path]:
    """Host files whose change must rebuild the overlay (for its cache key)."""
    src = _agent_source_roots()
    python = host_python()
    out = [python, *elf_deps(python)[0], *_input_files(src), Path(__file__)]
    import msgpack

    out += sorted(p for p in Path(msgpack.__file__).parent.iterdir() if p.suffix in (".py", ".so"))
    return out


def collect() -> Runtime:
    """Gather the runtime files (reads the host; takes ~1 s)."""
    python = host_python()
    src_root = _agent_source_roots()
    agent_files = _agent_files(src_root)
    names: set[str] = set(STDLIB_EXTRA) | {"msgpack", "provium.agent.guest"}
    for f in agent_files:
        mod = _module_name(src_root, f)
        names.add(mod)
        names |= _imports_in(f, mod)
    import msgpack

    msgpack_dir = Path(msgpack.__file__).resolve().parent
    modules = measure_modules(python, [str(src_root), str(msgpack_dir.parent)], sorted(names))

    stdlib = sysconfig.get_paths()["stdlib"]
    # The venv's sysconfig points at the base installation's stdlib; lib-dynload is under it.
    dynload = os.path.join(stdlib, "lib-dynload")
    rt = Runtime()
    zip_entries: dict[str, bytes] = {}
    dyn_so: list[Path] = []
    provium_files: set[Path] = set(agent_files)
    for name, file in sorted(modules.items()):
        top = name.split(".")[0]
        if top == "provium" and file:
            provium_files.add(Path(file).resolve())
        if top in ("provium", "msgpack"):
            continue
        rel = _rel_in(file, dynload)
        if rel is not None:
            dyn_so.append(Path(file))
            continue
        rel = _rel_in(file, stdlib)
        if rel is None or not rel.endswith(".py") or rel.startswith("site-packages"):
            continue  # built in, frozen, or not stdlib
        zip_entries[rel[:-3] + ".pyc"] = _pyc(Path(file).read_bytes(), f"{GUEST_ZIP}/{rel}")
        rt.modules.append(name)
    for f in sorted(provium_files):
        rel = f.relative_to(src_root).as_posix()
        zip_entries[rel[:-3] + ".pyc"] = _pyc(f.read_bytes(), f"{GUEST_ZIP}/{rel}")
    rt.files[GUEST_ZIP] = (_zip(zip_entries), 0o644)

    # msgpack as a directory: its C extension cannot be imported from a zip.  If the
    # extension fails to load in the guest, msgpack falls back to its pure-Python code.
    elf: list[Path] = [python]
    for p in sorted(msgpack_dir.iterdir()):
        if p.suffix == ".py":
            rt.files[f"{GUEST_SITE}/msgpack/{p.stem}.pyc"] = (_pyc(p.read_bytes(), f"{GUEST_SITE}/msgpack/{p.name}"), 0o644)
        elif p.suffix == ".so":
            rt.files[f"{GUEST_SITE}/msgpack/{p.name}"] = (_strip(p.read_bytes(), p.name), 0o755)
            elf.append(p)
    for so in dyn_so:
        rt.files[f"{GUEST_DYNLOAD}/{so.name}"] = (_strip(so.read_bytes(), so.name), 0o755)
        elf.append(so)

    libs: dict[str, Path] = {}
    loader: Path | None = None
    for e in elf:
        deps, ld = elf_deps(e)
        for d in deps:
            libs.setdefault(d.name, d)
        loader = loader or ld
    if loader is None:
        raise ImageError(f"{python} is statically linked; provium needs a dynamically linked Python "
                         "(its loader runs it in the guest)")
    for soname, path in sorted(libs.items()):
        rt.files[f"{GUEST_LIB}/{soname}"] = (_strip(path.read_bytes(), soname), 0o755)
    rt.loader = f"{GUEST_LIB}/{loader.name}"
    rt.files[rt.loader] = (loader.read_bytes(), 0o755)
    rt.files[GUEST_PYTHON] = (_strip(python.read_bytes(), "python3"), 0o755)
    rt.files[GUEST_PYTHON + "._pth"] = (PTH.encode(), 0o644)
    return rt


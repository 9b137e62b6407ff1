"""The agent overlay: its launcher, and its Python runtime actually serving the agent.

The runtime is relocatable (sys.path comes from `python3._pth`, relative to the
interpreter), so it runs from an unpacked copy on the host too: that proves the
zip, the extension modules and the libraries are enough for the agent.
"""

import asyncio
import json
import os
import shlex
import socket
import stat
import subprocess

import pytest

from provium.image import overlay, runtime
from provium.image.cpio import read_initrd
from provium.protocol.messages import (
    BatchExecArgs,
    ExecArgs,
    GetTimeArgs,
    ListdirArgs,
    ReadFileArgs,
    RunAsyncArgs,
    SpawnWorkerArgs,
    StatArgs,
    SyscallArgs,
    TailFileArgs,
    WorkerExecArgs,
    WriteFileArgs,
)
from provium.protocol.mux import MuxClient


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    path = overlay.ensure(cache)
    assert overlay.ensure(cache) == path  # content-hash cache hit
    root = tmp_path_factory.mktemp("overlay")
    entries = read_initrd(path.read_bytes())
    for name, mode, data in entries:
        dest = root / name
        if stat.S_ISDIR(mode):
            dest.mkdir(exist_ok=True)
        elif stat.S_ISLNK(mode):
            dest.symlink_to(data.decode())
        elif stat.S_ISREG(mode):
            dest.write_bytes(data)
            dest.chmod(stat.S_IMODE(mode))
    return root, {n: (m, d) for n, m, d in entries}


def test_overlay_carries_launcher_and_runtime_but_no_init(unpacked):
    _, entries = unpacked
    assert "init" not in entries  # never shadows the profile's /init
    mode, script = entries["sbin/provium-agent"]
    assert stat.S_IMODE(mode) == 0o755
    text = script.decode()
    assert text.startswith("#!/provium/bin/busybox sh\n")
    assert 'if [ "$$" = 1 ] && [ -e /init ]' in text and 'exec /init "$@"' in text
    assert "mount -t devtmpfs" in text and "mount -t proc" in text and "mount -t sysfs" in text
    for needed in ("provium/bin/busybox", "provium/bin/python3", "provium/bin/python3._pth",
                   "provium/lib/python3.zip", "provium/lib/python3-start.zip", "provium/lib/python3/code-cache.bin",
                   "provium/lib/python3/boot-modules.bin"):
        assert needed in entries, needed
    assert any(n.startswith("provium/lib/ld-linux") for n in entries)
    assert any(n.startswith("provium/lib/libc.so") for n in entries)
    assert any("_ctypes" in n for n in entries) or "_ctypes" in runtime.sys.builtin_module_names
    for d in ("dev", "proc", "sys", "tmp"):
        assert stat.S_ISDIR(entries[d][0])
    for node in ("dev/urandom", "dev/null", "dev/console"):  # usable before anything mounts /dev
        assert stat.S_ISCHR(entries[node][0]), node


def test_exec_argv_is_json_and_points_into_the_overlay(unpacked):
    _, entries = unpacked
    text = entries["sbin/provium-agent"][1].decode()
    line = next(l for l in text.splitlines() if l.startswith("export PROVIUM_AGENT_EXEC="))
    argv = json.loads(shlex.split(line.split("=", 1)[1])[0])
    assert argv[0].startswith("/provium/lib/ld-linux") and argv[1:3] == ["--library-path", "/provium/lib"]
    assert argv[3] == "/provium/bin/python3"
    # bytecode run as the script (no `-c` text to compile), then the target
    assert argv[-2:] == ["/provium/lib/python3/run.pyc", "provium.agent.__main__:main"]
    for a in argv:
        if a.startswith("/provium/"):
            assert a.lstrip("/") in entries, a


def _host_argv(root, target):
    """The guest's argv (runtime.Runtime.argv), pointed at the unpacked copy."""
    lib = root / "provium" / "lib"
    loader = next(lib.glob("ld-linux*"))
    return [str(loader), "--library-path", str(lib), str(root / "provium/bin/python3"), "-X", "utf8",
            str(lib / "python3" / "run.pyc"), target]


def _host_argv_c(root, code):
    """The interpreter of the unpacked copy running `code` (-c)."""
    return _host_argv(root, "")[:-2] + ["-c", code]


def test_packed_runtime_has_what_the_agent_imports(unpacked):
    root, _ = unpacked
    code = ("import sys, provium.agent.server, provium.agent.workers, provium.agent.syscalls, ctypes, msgpack;"
            "print(sys.path[0].endswith('python3-start.zip'), sys.path[1].endswith('python3.zip'),"
            " 'site' in sys.modules, sys.flags.isolated)")
    lib = root / "provium" / "lib"
    loader = next(lib.glob("ld-linux*"))
    out = subprocess.run([str(loader), "--library-path", str(lib), str(root / "provium/bin/python3"), "-c", code],
                         capture_output=True, text=True, env={"PYTHONPATH": "/nonexistent", "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False", "1"]  # our zips first, no site, isolated from env


def test_startup_modules_come_preloaded_and_the_start_zip_is_small(unpacked):
    import io
    import zipfile

    root, entries = unpacked
    start = zipfile.ZipFile(io.BytesIO(entries["provium/lib/python3-start.zip"][1])).namelist()
    assert "provium_boot.pyc" in start and "encodings/__init__.pyc" in start
    assert all(n == "provium_boot.pyc" or n.startswith("encodings/") for n in start)
    # What the agent imports before serving is served from the preload table, and so is
    # what its first ops import (an op family: files; subprocess, for a worker); what
    # none of them imports (json here) still comes from the full zip; `org` (copy's
    # Jython probe) fails at once.
    code = ("import provium_boot; provium_boot.install();"
            "import provium.agent.guest, provium.agent.server, msgpack, enum, subprocess, copy, sys, json;"
            "import provium.agent.files as files;"
            "print(type(provium.agent.server.__spec__.loader).__name__, type(enum.__spec__.loader).__name__,"
            " type(json.__spec__.loader).__name__, msgpack._cmsgpack.__name__, sys.modules['org'],"
            " provium.agent.server.__file__.endswith('python3.zip/provium/agent/server.pyc'),"
            " type(subprocess.__spec__.loader).__name__, type(files.__spec__.loader).__name__,"
            " files.__file__.endswith('python3.zip/provium/agent/files.pyc'))")
    out = subprocess.run(_host_argv_c(root, code), capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Preloaded", "Preloaded", "zipimporter", "msgpack._cmsgpack", "None", "True",
                                  "Preloaded", "Preloaded", "True"]


# Everything the guest agent has imported when it starts serving (provium_boot.run of
# provium.agent.guest).  Each module costs emulated CPU at every boot: a new one must
# be worth it (or be imported where it is first needed), and then go on this list.
GUEST_STARTUP_MODULES = {
    "__future__", "__main__", "_abc", "_codecs", "_collections", "_collections_abc", "_datetime",
    "_frozen_importlib", "_frozen_importlib_external", "_functools", "_imp", "_io", "_operator", "_signal",
    "_sre", "_stat", "_struct", "_thread", "_warnings", "_weakref", "_weakrefset", "abc", "atexit", "builtins",
    "codecs", "collections", "copy", "copyreg", "dataclasses", "datetime", "encodings", "encodings.aliases",
    "encodings.utf_8", "enum", "functools", "gc", "genericpath", "inspect", "io", "itertools", "keyword",
    "marshal", "msgpack", "msgpack._cmsgpack", "msgpack.exceptions", "msgpack.ext", "operator", "org",
    "os", "os.path", "posix", "posixpath", "provium", "provium.agent", "provium.agent.base",
    "provium.agent.channel", "provium.agent.guest", "provium.agent.ops", "provium.agent.pool",
    "provium.agent.reaper", "provium.agent.server", "provium.agent.startup", "provium.agent.state",
    "provium.errors", "provium.protocol", "provium.protocol.codec", "provium.protocol.core",
    "provium.protocol.decoder", "provium.protocol.envelope", "provium.protocol.framing",
    "provium.protocol.kinds", "provium_boot", "re", "reprlib", "select", "stat", "struct", "sys", "threading",
    "time", "types",
    "zipimport",
}


def test_guest_startup_imports_stay_within_the_list_and_leave_the_collector_on(unpacked):
    root, _ = unpacked
    report = ("import atexit, gc, sys;"
              "atexit.register(lambda: print(gc.isenabled(), gc.get_freeze_count(),"
              " ' '.join(n for n in sys.modules if not n.startswith(('_cython', 'cython'))), '\\n',"
              " ' '.join(sorted(vars(sys.modules['datetime'])))))")
    # the guest's entry point (what run.pyc runs), up to the moment main() would start serving
    argv = _host_argv_c(root, report + "; import provium_boot; provium_boot.run('provium.agent.guest:_mix_rng_seed')")
    out = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split("\n")[:2]
    enabled, frozen, *modules = first.split()
    assert set(modules) - GUEST_STARTUP_MODULES == set()
    # each op family's handlers and wire types load on its first op (agent/ops.py)
    assert not [m for m in modules if m.startswith(("provium.protocol.ops_", "provium.agent.files"))]
    # datetime (which msgpack imports) is preloaded as a stand-in for what its pure-Python
    # body ends up as, `from _datetime import *`: the same namespace as the real one's
    import datetime
    assert second.split() == sorted(vars(datetime)) and "math" not in modules
    assert "inspect" in modules and "ast" not in modules  # inspect is startup.py's stand-in
    assert "copy" in modules and "weakref" not in modules  # so is copy (which imports weakref)
    assert "re" in modules and "re._compiler" not in modules and "_sre" not in modules  # and re
    # the collector paused for the imports (guest_boot.run) is on again, and what they
    # built is frozen out of its sight
    assert enabled == "True" and int(frozen) > 5000


def test_without_busybox_for_the_builtin_initramfs_which_has_it_where_the_overlay_wants_it(tmp_path, unpacked):
    _, entries = unpacked
    lean = {n: (m, d) for n, m, d in read_initrd(overlay.ensure(tmp_path, busybox=False).read_bytes())}
    assert set(entries) - set(lean) == {"provium/bin/busybox"}
    assert lean["sbin/provium-agent"] == entries["sbin/provium-agent"]
    assert overlay.cache_key(busybox=False) != overlay.cache_key()
    from provium.config import builtin_linux_profile
    from provium.image import boot

    assert boot.overlay_path(builtin_linux_profile(), tmp_path) == overlay.ensure(tmp_path, busybox=False)


def _serve(argv, env, talk) -> str:
    """Run the agent `argv` on one end of a socketpair, hand a connected client (after
    the hello) to the coroutine function `talk`, and return the agent's stderr once it
    has exited cleanly."""
    host_end, agent_end = socket.socketpair()
    proc = subprocess.Popen(argv + ["--fd", str(agent_end.fileno())], pass_fds=[agent_end.fileno()], env=env,
                            stderr=subprocess.PIPE)
    agent_end.close()

    async def session():
        reader, writer = await asyncio.open_unix_connection(sock=host_end)
        client = await MuxClient.connect(reader, writer, timeout=60)  # the hello
        try:
            await talk(client)
        finally:
            await client.close()

    try:
        asyncio.run(session())
    finally:
        host_end.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, err
    return err


def test_packed_runtime_serves_the_agent(unpacked):
    root, _ = unpacked
    argv = _host_argv(root, "provium.agent.__main__:main")

    async def talk(client):
        r = await client.call(ExecArgs(cmd="/bin/sh", args=["-c", "echo packed-ok"]), timeout=60)
        assert r.ok and r.value.stdout == b"packed-ok\n"
        # a worker is the agent re-executed through $PROVIUM_AGENT_EXEC
        w = await client.call(SpawnWorkerArgs(), timeout=60)
        assert w.ok, w
        r = await client.call(WorkerExecArgs(w.value, ExecArgs(cmd="/bin/sh", args=["-c", "echo $$"])), timeout=60)
        assert r.ok and int(r.value.stdout) != os.getpid()

    _serve(argv, {"PATH": "/usr/bin:/bin", "PROVIUM_AGENT_EXEC": json.dumps(argv)}, talk)


def test_overlay_ships_the_error_root_and_rebuilds_when_it_changes(unpacked):
    import io
    import zipfile

    _, entries = unpacked
    names = zipfile.ZipFile(io.BytesIO(entries["provium/lib/python3.zip"][1])).namelist()
    assert "provium/errors.pyc" in names  # protocol and agent modules import it
    assert any(p.name == "errors.py" and p.parent.name == "provium" for p in runtime.inputs())


def test_the_agent_compiles_nothing_from_its_start_through_its_first_ops(unpacked, tmp_path):
    """Under TCG the first compile in a fresh guest is costly (the emulator translates
    the interpreter's parser and compiler): the guest runs bytecode, and what dataclasses,
    namedtuple and the codec would compile comes from the code cache (guest_boot.py)."""
    root, _ = unpacked
    hook = ("import os, sys\n"
            "def audit(event, args):\n"
            "    if event == 'compile':\n"
            "        os.write(2, b'COMPILED ' + repr(args[0])[:80].encode() + b'\\n')\n"
            "sys.addaudithook(audit)\n"
            # and nothing an op imports comes from the zip: its op family is preloaded too
            "import atexit\n"
            "atexit.register(lambda: os.write(2, b'ZIPPED ' + ' '.join(sorted(n for n, m in sys.modules.items()"
            " if type(getattr(getattr(m, '__spec__', None), 'loader', None)).__name__ == 'zipimporter')).encode()"
            " + b'\\nLOADED ' + ' '.join(sorted(sys.modules)).encode() + b'\\n'))\n"
            "import provium_boot; provium_boot.run('provium.agent.__main__:main')\n")
    async def talk(client):
        # an op of each family, each of which loads with its first op
        for op in (ExecArgs(cmd="/bin/true"), StatArgs(path="/"), ListdirArgs(path="/"), GetTimeArgs(),
                   WriteFileArgs(path=str(tmp_path / "f"), data=b"x" * (1 << 20)),
                   ReadFileArgs(path=str(tmp_path / "f")), RunAsyncArgs(cmd="/bin/true"),
                   BatchExecArgs(items=[ExecArgs(cmd="/bin/true")]),
                   SyscallArgs(nr=39)):
            reply = await client.call(op, timeout=60)
            assert getattr(reply, "ok", True), (op, reply)
        ack, stream = await client.open_stream(TailFileArgs(path=str(tmp_path / "f")), timeout=60)
        assert ack.ok and stream is not None

    err = _serve(_host_argv_c(root, hook), {"PATH": "/usr/bin:/bin"}, talk)
    assert "COMPILED" not in err, err
    zipped = err.split("ZIPPED ", 1)[1].split("\n", 1)[0].split()
    loaded = err.split("LOADED ", 1)[1].split("\n", 1)[0].split()
    for family in ("files", "procs", "clock", "batch", "syscalls", "streams"):
        assert f"provium.agent.{family}" in loaded and f"provium.protocol.ops_{family}" in loaded, family
    assert "provium.agent.bulkwrite" in loaded  # the 1 MiB write_file went to its file as it came
    # Only from zips: the codecs and the boot shim (the start zip, before anything is
    # preloaded), and this entry's own (a guest's is provium.agent.guest, preloaded).
    assert set(zipped) <= {"encodings", "encodings.aliases", "encodings.utf_8", "provium_boot",
                           "provium.agent.__main__", "socket"}, zipped

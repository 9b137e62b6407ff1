"""The pytest plugin (`provium/pytest_plugin.py`) and the public API around it, with `--vmm local`.

Each test runs an inner pytest in a subprocess, as a user's suite would run:
the plugin is named with `-p provium.pytest_plugin` (the entry point's name),
so these tests do not depend on how the shared venv was installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path: Path, source: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "provium.pytest_plugin", "-p", "no:cacheprovider",
                           "-q", "-rA", *args, "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def outcomes(r: subprocess.CompletedProcess) -> dict[str, str]:
    """test name -> PASSED/FAILED/SKIPPED/ERROR, from the -rA summary."""
    found = {}
    for m in re.finditer(r"^(PASSED|FAILED|SKIPPED|ERROR) test_inner\.py::(\w+)", r.stdout, re.M):
        found[m.group(2)] = m.group(1)
    return found


def test_the_contract_shape_passes_with_the_local_backend(tmp_path):
    r = run_pytest(tmp_path, """
        def test_hello(provium_lab):
            vm = provium_lab.vm("box", "linux")   # same arguments as Lua's provium:vm
            vm.boot()
            r = vm.run("echo hello")
            assert r.stdout == b"hello\\n" and r.exit_code == 0

        def test_keywords_and_lookup(provium_lab):
            vm = provium_lab.vm("box", "linux", memory="256M")
            assert provium_lab.vm("box") is vm
            vm.boot(cpus=1)
            assert vm.memory_bytes == 256 << 20
            assert vm.run("cat", stdin=b"in").stdout == b"in"
    """, "--provium-vmm", "local")
    assert outcomes(r) == {"test_hello": "PASSED", "test_keywords_and_lookup": "PASSED"}, r.stdout + r.stderr


def test_a_failing_test_leaves_no_agent_and_reports_the_console(tmp_path):
    """The lab's teardown runs after a failure: the agent is gone while the session
    still lives (the next test checks), and the failure report has a console section."""
    r = run_pytest(tmp_path, """
        import psutil, pathlib

        def test_fails(provium_lab):
            vm = provium_lab.vm("box", "linux").boot()
            pid = int(vm.run("echo $PPID").stdout)   # the local agent runs the shell
            assert "provium.agent" in " ".join(psutil.Process(pid).cmdline())
            pathlib.Path("agent.pid").write_text(str(pid))
            assert vm.run("echo one").stdout == b"two\\n"

        def test_agent_is_gone(provium_session):
            pid = int(pathlib.Path("agent.pid").read_text())
            try:
                assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                pass
            assert provium_session.vms[0].state == "shutdown"
    """, "--provium-vmm", "local")
    assert outcomes(r) == {"test_fails": "FAILED", "test_agent_is_gone": "PASSED"}, r.stdout + r.stderr
    assert "provium console: box" in r.stdout
    pid = int((tmp_path / "agent.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_options_are_listed_by_pytest_help(tmp_path):
    r = run_pytest(tmp_path, "", "--help")
    for opt in ("--provium-vmm", "--provium-config", "--provium-accel", "--provium-events",
                "--provium-keep-artifacts"):
        assert opt in r.stdout, r.stdout


def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {"provium.pytest_plugin": "provium.pytest_plugin"}


def test_unused_it_loads_nothing_of_the_host_model(tmp_path):
    r = run_pytest(tmp_path, """
        import sys

        def test_plain():
            assert "provium.pytest_plugin" in sys.modules
            assert not [m for m in sys.modules if m.startswith(("provium.host", "provium.vmm", "provium.events"))]
    """)
    assert outcomes(r) == {"test_plain": "PASSED"}, r.stdout + r.stderr


def test_events_are_saved_like_a_cli_run(tmp_path):
    from provium.events.types import iter_events

    r = run_pytest(tmp_path, """
        import pytest

        def test_ok(provium_lab):
            provium_lab.vm("a", "linux").boot()

        def test_bad(provium_lab):
            assert False, "wanted"

        @pytest.mark.skip(reason="not today")
        def test_skipped(provium_lab):
            pass
    """, "--provium-vmm", "local", "--provium-events", "ev.bin")
    assert outcomes(r)["test_ok"] == "PASSED", r.stdout + r.stderr
    with open(tmp_path / "ev.bin", "rb") as f:
        frames = [(fr.kind, getattr(fr.payload, "name", None) or getattr(fr.payload, "vm_name", None))
                  for fr in iter_events(f)]
    assert frames == [("test_started", "test_ok"), ("vm_spawned", "a"), ("test_passed", "test_ok"),
                      ("vm_shutdown", "a"), ("test_started", "test_bad"), ("test_failed", "test_bad"),
                      ("test_skipped", "test_skipped")]


def test_each_xdist_worker_has_its_own_session(tmp_path):
    pytest.importorskip("xdist")
    r = run_pytest(tmp_path, """
        import os, pathlib, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_vm(provium_lab, provium_session, n):
            import time
            vm = provium_lab.vm("box", "linux").boot()     # the same name in every test and worker
            assert vm.run("echo hi").stdout == b"hi\\n"
            pathlib.Path(f"w{n}").write_text(f"{os.getpid()} {id(provium_session)}")
            time.sleep(0.3)  # let both workers take tests
    """, "--provium-vmm", "local", "-n", "2", "--provium-events", "ev.bin")
    assert r.returncode == 0, r.stdout + r.stderr
    seen = {(tmp_path / f"w{n}").read_text() for n in range(4)}
    pids = {s.split()[0] for s in seen}
    assert len(pids) == 2 and len(seen) == 2, seen  # two worker processes, one session each
    from provium.events.types import iter_events

    with open(tmp_path / "ev.bin", "rb") as f:
        kinds = [fr.kind for fr in iter_events(f)]
    assert kinds.count("test_passed") == 4 and kinds.count("vm_spawned") == 4


def test_session_open_checks_its_arguments():
    import provium

    with pytest.raises(provium.ArgumentError, match=r"unknown `vmm` 'kvm' \(valid: qemu, local\)"):
        provium.Session.open("kvm")
    with pytest.raises(provium.ArgumentError, match=r"unknown `accel` 'fast' \(valid: auto, kvm, tcg\)"):
        provium.Session.open("local", accel="fast")
    with pytest.raises(provium.ConfigError, match="nope.toml"):
        provium.Session.open("local", config="/nonexistent/nope.toml")


def test_python_keywords_are_validated_by_the_host_model():
    import provium

    with provium.Session.open("local") as s:
        with s.lab() as lab:
            with pytest.raises(provium.ArgumentError, match="unknown"):
                lab.vm("a", "linux", memroy="1G")
            with pytest.raises(provium.ArgumentError, match="needs a profile"):
                lab.vm("a", opts={"memory": "1G"})
            vm = lab.vm("b", "linux")
            with vm:
                vm.boot()
                r = vm.run("sh", args=["-c", "echo $X"], env={"X": "y"}, timeout=5)
                assert isinstance(r, provium.RunResult) and r.stdout == b"y\n"
            assert vm.state == "shutdown"  # the `with` closed it
        assert s.vms == [vm]
    assert s.closed


def test_bridge_options_are_keywords_too():
    import provium

    with provium.Session.open("local") as s, s.lab() as lab:
        lan = lab.bridge("lan", addressing=True)
        assert lan.subnet is not None and lab.bridge("lan") is lan
        with pytest.raises(provium.ArgumentError, match=r"enable_uplink: unknown option `colour` \(valid: ports\)"):
            lan.enable_uplink(colour="red")
        with pytest.raises(provium.ArgumentError, match=r"capture: unknown option `colour` \(valid: file\)"):
            lan.capture(colour="red")
        with pytest.raises(provium.ArgumentError, match="unknown option `colour`"):
            lab.bridge("wan", colour="red")


def test_import_provium_loads_no_other_module():
    """The CLI and the guest agent import the package first: its public names are lazy."""
    code = ("import sys; before = set(sys.modules); import provium; "
            "print(sorted(set(sys.modules) - before)); provium.VM; print('provium.host.vm' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == ["['provium']", "True"], r.stdout + r.stderr


def test_session_open_for_qemu_prepares_the_host_like_the_cli(tmp_path):
    """Dynamic profiles are built (and the host checked) before anything boots;
    a failure is a clear error and no session is left behind."""
    import provium

    cfg = tmp_path / "provium.toml"
    cfg.write_text(f'[profiles.k]\nkernel = "bz"\ncmdline = "x"\nbuild = "touch {tmp_path}/built; exit 3"\n')
    with pytest.raises(provium.ImageError, match=r"profile `k`: build command failed \(exit code 3\)"):
        provium.Session.open("qemu", config=cfg)
    assert (tmp_path / "built").exists()
    (tmp_path / "built").unlink()
    with provium.Session.open("qemu", config=cfg, prepare=False) as s:  # as --no-preflight --no-build
        assert not s.closed
    assert not (tmp_path / "built").exists()

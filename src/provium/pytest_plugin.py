"""The pytest plugin: real guests in a pytest suite, over the public Python API.

Registered through the `pytest11` entry point, so it is loaded in every pytest
run of an environment where provium is installed, this project's own included.
That is why it costs nothing until used: at import it loads only pytest (the
host model is imported inside the fixtures), its hooks return at once for a
test that uses no provium fixture, and nothing is started before a fixture
asks for it.

- `provium_session` (session scope): one `provium.Session` per pytest process,
  built from `--provium-vmm/--provium-config/--provium-accel` exactly as the CLI
  builds one.  Under pytest-xdist each worker is its own process and so gets
  its own session, switch and VMs; nothing is shared between workers.
- `provium_lab` (function scope): a fresh lab per test; after the test, pass
  or fail, every VM, bridge and disk it made is shut down and closed.
- A failing test's report gets one section per VM of its lab with the tail of
  the VM's serial console (a `pytest_runtest_makereport` wrapper: the report is
  made before fixtures are torn down, so the VMs are still there to read).
- `--provium-events PATH` writes the msgpack event stream a CLI run writes
  with `--save-events`: the VMs' lifecycle events and test_started / passed /
  failed / skipped for each test that used a provium fixture.  The file is
  truncated once by the controlling process; xdist workers append (the sink
  locks each frame, so frames never interleave).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .host.lab import Lab
    from .host.session import Session

FIXTURES = ("provium_session", "provium_lab")
CONSOLE_TAIL_BYTES = 2048

SESSION_KEY = pytest.StashKey["Session"]()
LAB_KEY = pytest.StashKey["Lab"]()
STARTED_KEY = pytest.StashKey[bool]()
FAILED_KEY = pytest.StashKey[bool]()
EVIDENCE_ROOT_KEY = pytest.StashKey[str]()
KEEP_MODES = ("on-failure", "always", "never")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("provium", "provium: real guest VMs (fixtures provium_session, provium_lab)")
    group.addoption("--provium-vmm", default="qemu", choices=("qemu", "local"),
                    help="VMM backend for provium fixtures: qemu (real guests, default) or local "
                         "(the agent as a host process; fast, no VM)")
    group.addoption("--provium-config", default=None, metavar="PATH",
                    help="provium.toml to use (default: the nearest one from the current directory up, "
                         "else the built-in `linux` profile)")
    group.addoption("--provium-accel", default=None, choices=("auto", "kvm", "tcg"),
                    help="QEMU acceleration for every profile (default: each profile's own)")
    group.addoption("--provium-events", default=None, metavar="PATH",
                    help="save provium's msgpack event stream to PATH (as `provium --save-events`)")
    group.addoption("--provium-keep-artifacts", default="on-failure", choices=KEEP_MODES,
                    help="keep the console log, QMP log and QEMU argv of a provium_lab's VMs after the test: "
                         "on-failure (default), always or never (as `provium --keep-artifacts`)")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("provium_events", None)
    if path and not _is_xdist_worker(config):
        # Truncate once here; every session (one per xdist worker) appends.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise pytest.UsageError(f"--provium-events: cannot open `{path}`: {exc.strerror}") from exc


@pytest.fixture(scope="session")
def provium_session(request: pytest.FixtureRequest) -> Iterator[Session]:
    """One provium Session for this pytest process (per xdist worker), closed at the end of the run."""
    from .host.session import Session

    opt = request.config.getoption
    events = None
    if opt("provium_events"):
        from .events.sinks import FileSink

        events = FileSink(opt("provium_events"), truncate=False)  # appended: the controller truncated it
    session = Session.open(opt("provium_vmm"), config=opt("provium_config"), accel=opt("provium_accel"),
                           events=events)
    request.config.stash[SESSION_KEY] = session
    if opt("provium_keep_artifacts") != "never":
        import tempfile
        import time

        from .artifacts import PREFIX

        # Named now, made by the first VM that leaves evidence (artifacts.keep_vm_evidence).
        request.config.stash[EVIDENCE_ROOT_KEY] = os.path.join(
            tempfile.gettempdir(), f"{PREFIX}pytest-{os.getpid()}-{time.time_ns()}")
    try:
        yield session
    finally:
        del request.config.stash[SESSION_KEY]
        session.close()


@pytest.fixture
def provium_lab(request: pytest.FixtureRequest, provium_session: Session) -> Iterator[Lab]:
    """A lab of its own for this test; its VMs are shut down after the test, even when it fails."""
    name = "test:" + request.node.name.replace("/", "_")
    lab = provium_session.lab(name)
    request.node.stash[LAB_KEY] = lab
    try:
        yield lab
    finally:
        _close_keeping_evidence(request, lab)


def _close_keeping_evidence(request: pytest.FixtureRequest, lab: Lab) -> None:
    """Close the lab; a QEMU guest copies its evidence files (console.log, qmp.log,
    qemu.argv, qemu.stderr) out of its scratch directory as it is torn down, when
    `PROVIUM_ARTIFACTS_DIR` names a directory: the mechanism the CLI's runners use."""
    from .artifacts import ENV_FILE, file_slug

    node = request.node
    mode = request.config.getoption("provium_keep_artifacts")
    root = request.config.stash.get(EVIDENCE_ROOT_KEY, None)
    keep = root is not None and (mode == "always" or (mode == "on-failure" and node.stash.get(FAILED_KEY, False)))
    if not keep or not lab.all_vms():
        lab.close()
        return
    assert root is not None
    before = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = os.path.join(root, file_slug(node.nodeid.replace("::", "/")))
    try:
        lab.close()
    finally:
        if before is None:
            os.environ.pop(ENV_FILE, None)
        else:
            os.environ[ENV_FILE] = before


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    root = config.stash.get(EVIDENCE_ROOT_KEY, None)
    if root is not None and os.path.isdir(root):
        terminalreporter.write_line(f"provium: VM evidence (console log, QMP log, QEMU argv) kept in {root}")


# ---- reports and events ------------------------------------------------------------


def _uses_provium(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return any(f in names for f in FIXTURES)


def _console_sections(lab: Lab) -> list[tuple[str, str]]:
    out = []
    for path, vm in lab.all_vms():
        try:
            tail = vm.console_tail(CONSOLE_TAIL_BYTES)
        except Exception as exc:  # noqa: BLE001 - a report must still be made
            text = f"(console unavailable: {exc})"
        else:
            text = tail.decode("utf-8", "replace") if tail else f"(no console output; vm state: {vm.state})"
        out.append((f"provium console: {path} (last {CONSOLE_TAIL_BYTES} bytes)", text))
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if not _uses_provium(item):
        return report
    if report.failed and report.when in ("setup", "call"):
        item.stash[FAILED_KEY] = True
    lab = item.stash.get(LAB_KEY, None)
    sections: list[tuple[str, str]] = []
    if report.failed and report.when in ("setup", "call") and lab is not None:
        sections = _console_sections(lab)
        report.sections.extend(sections)
    session = item.config.stash.get(SESSION_KEY, None)
    if session is not None and session.event_recorder is not None:
        _record(item, report, session, sections)
    return report


def _record(item: pytest.Item, report: pytest.TestReport, session: Session,
            sections: list[tuple[str, str]]) -> None:
    from .events import types as ev

    assert session.event_recorder is not None
    path, _, name = item.nodeid.partition("::")
    session.event_recorder.path = path
    emit = session.event_recorder.emit
    duration_ns = int(report.duration * 1e9)
    if report.when == "setup":
        if report.passed:
            item.stash[STARTED_KEY] = True
            emit(ev.TestStarted(path=path, name=name))
        elif report.skipped:
            emit(ev.TestSkipped(path=path, name=name, reason=_skip_reason(report)))
        else:
            emit(ev.TestFailed(path=path, name=name, duration_ns=duration_ns, reason=_reason(report),
                               console_excerpt=_excerpt(sections)))
    elif report.when == "call":
        if report.passed:
            emit(ev.TestPassed(path=path, name=name, duration_ns=duration_ns))
        elif report.skipped:
            emit(ev.TestSkipped(path=path, name=name, reason=_skip_reason(report)))
        else:
            emit(ev.TestFailed(path=path, name=name, duration_ns=duration_ns, reason=_reason(report),
                               console_excerpt=_excerpt(sections)))


def _excerpt(sections: list[tuple[str, str]]) -> str:
    return "\n".join(f"== {title}\n{text}" for title, text in sections)


def _reason(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(report.longrepr or "failed")


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr or "")

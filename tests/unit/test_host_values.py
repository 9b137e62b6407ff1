"""Value conventions shared by the Python and Lua APIs: durations, signals, sizes,
command and boot option parsing, RunResult."""

import datetime
import math

import pytest

from provium.config import Profile
from provium.host.bootopts import BootOpts, make_spec, parse_boot_opts
from provium.host.errors import ArgumentError, CommandFailed, WrongState
from provium.host.execargs import build_command
from provium.host.results import RunResult
from provium.host.values import (
    duration_ms,
    parse_duration,
    parse_signal,
    parse_size,
    seconds_to_ns,
    signal_name,
)
from provium.protocol.messages import ExecOk
from provium.protocol.types import ExitStatus


# ---- durations ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    (5, 5.0), (0.25, 0.25), ("10ms", 0.01), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0),
    ("3", 3.0), (" 1.5s ", 1.5), ("0", 0.0), (".5s", 0.5), (datetime.timedelta(milliseconds=1500), 1.5),
])
def test_duration_spellings(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


def test_duration_unknown_unit_names_the_valid_units():
    with pytest.raises(ArgumentError) as ei:
        parse_duration("5fortnights", "proc:wait timeout")
    msg = str(ei.value)
    assert msg.startswith("proc:wait timeout: cannot parse `5fortnights`")
    for unit in ("ms", "s", "m", "h"):
        assert f"`{'500' if unit == 'ms' else '5' if unit == 's' else '2' if unit == 'm' else '1'}{unit}`" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "-2s", -0.5])
def test_duration_rejects_nan_inf_negative(bad):
    with pytest.raises(ArgumentError) as ei:
        parse_duration(bad)
    assert "must be a finite, non-negative number" in str(ei.value)


def test_duration_nan_message_says_nan():
    with pytest.raises(ArgumentError, match=r"\(got NaN\)"):
        parse_duration(math.nan)


@pytest.mark.parametrize("bad, tname", [(True, "boolean"), ({}, "table"), ([1], "table"), (object(), "object")])
def test_duration_wrong_type(bad, tname):
    with pytest.raises(ArgumentError, match=f"expected number\\|string, got {tname}"):
        parse_duration(bad)


def test_duration_none_and_signed():
    assert parse_duration(None, allow_none=True) is None
    with pytest.raises(ArgumentError, match="got nil"):
        parse_duration(None)
    assert parse_duration("-5s", "clock:advance", signed=True) == -5.0
    assert parse_duration(-90, "clock:advance", signed=True) == -90.0
    with pytest.raises(ArgumentError, match="clock:advance: must be finite"):
        parse_duration(float("nan"), "clock:advance", signed=True)
    # Strings that float() would take but a duration must not.
    for junk in ("nan", "inf", "1_000", "5 s s", ""):
        with pytest.raises(ArgumentError, match="cannot parse"):
            parse_duration(junk)


def test_duration_conversions():
    assert duration_ms(0.0105) == 10
    assert duration_ms(0.0001) == 1  # a positive timeout never becomes "no time at all"
    assert duration_ms(0) == 0
    assert seconds_to_ns(1.5) == 1_500_000_000
    assert seconds_to_ns(-0.5) == -500_000_000
    assert seconds_to_ns(1e30) == 2**63 - 1


# ---- signals -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, num", [
    (None, 15), (9, 9), ("term", 15), ("SIGTERM", 15), ("kill", 9), ("Sigkill", 9), ("9", 9), ("int", 2),
    ("hup", 1), ("quit", 3), ("stop", 19), ("cont", 18), ("usr1", 10), ("usr2", 12), ("alrm", 14),
    ("pipe", 13), ("chld", 17), ("winch", 28), ("15", 15),
])
def test_signal_names(value, num):
    assert parse_signal(value) == num


def test_signal_errors():
    with pytest.raises(ArgumentError, match="unknown signal name `sigbogus`"):
        parse_signal("SIGBOGUS")
    with pytest.raises(ArgumentError, match="unknown signal name `19`"):
        parse_signal("19")  # numeric strings only for the signals the reference lists
    with pytest.raises(ArgumentError, match="kill: signal must be int or string, got number"):
        parse_signal(1.5)
    with pytest.raises(ArgumentError, match="worker:kill: signal must be int or string, got table"):
        parse_signal({}, "worker:kill")
    with pytest.raises(ArgumentError, match="proc:signal: expected integer or signal name, got nil"):
        parse_signal(None, "proc:signal", required=True)
    assert signal_name(9) == "SIGKILL" and signal_name(15) == "SIGTERM"


# ---- sizes -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, n", [
    (1024, 1024), ("512M", 512 << 20), ("512m", 512 << 20), ("1G", 1 << 30), ("4k", 4096), ("2T", 2 << 40),
    ("100", 100), ("512MiB", 512 << 20), (2048.0, 2048),
])
def test_size_spellings(value, n):
    assert parse_size(value, "memory") == n


@pytest.mark.parametrize("bad, needle", [
    ("1.5G", "cannot parse size"), ("lots", "cannot parse size"), (-1, "negative"), (True, "got boolean"),
    ("99999999999999999999T", "overflows u64"), (2**64, "overflows u64"),
])
def test_size_errors(bad, needle):
    with pytest.raises(ArgumentError, match=needle):
        parse_size(bad, "memory")


# ---- commands ----------------------------------------------------------------------------

def test_command_forms():
    c = build_command("vm:run", "echo hi | wc -c", None)
    assert (c.cmd, c.args) == ("sh", ["-c", "echo hi | wc -c"])
    c = build_command("vm:run", ["echo", "a b"], None)
    assert (c.cmd, c.args) == ("echo", ["a b"])
    c = build_command("vm:run", "printf", {"args": ["%s", "x"], "env": {"A": "1"}, "env_clear": True,
                                           "cwd": "/tmp", "stdin": "in", "timeout": "1.5s"})
    assert (c.cmd, c.args, c.env, c.env_clear, c.cwd, c.stdin, c.timeout_ms) == \
        ("printf", ["%s", "x"], {"A": "1"}, True, "/tmp", b"in", 1500)
    # opts without args: still the shell form
    assert build_command("vm:run", "printenv FOO", {"env": {"FOO": "bar"}}).cmd == "sh"
    assert build_command("vm:run", "x", {"timeout_ms": 250}).timeout_ms == 250


@pytest.mark.parametrize("cmd, opts, needle", [
    (None, None, "expects at least a command string"),
    (42, None, "first argument must be a string"),
    ([], None, "command list is empty"),
    (["a", 1], None, "`command`[2] must be a string"),
    ("x", {"bogus": 1}, "unknown option `bogus` (valid: args, stdin, env, env_clear, cwd, timeout, timeout_ms)"),
    ("x", {"env": {"A": 1}}, "`env` must map strings to strings"),
    ("x", {"timeout": -1}, "vm:run timeout: must be a finite, non-negative number"),
    ("x", {"timeout": 0}, "timeout=0"),
    ("x", {"timeout": "1s", "timeout_ms": 5}, "not both"),
    (["a"], {"args": ["b"]}, "not both"),
    ("x", "notatable", "options must be a table"),
])
def test_command_errors(cmd, opts, needle):
    with pytest.raises(ArgumentError) as ei:
        build_command("vm:run", cmd, opts)
    assert needle in str(ei.value)


def test_run_async_rejects_timeout():
    with pytest.raises(ArgumentError) as ei:
        build_command("vm:run_async", "sleep 1", {"timeout": "1s"}, async_=True)
    assert str(ei.value) == ("vm:run_async: `timeout` is not honoured here; pass it to "
                             "`proc:wait(timeout)` instead")


# ---- boot options ------------------------------------------------------------------------

def test_boot_opts_unknown_key_lists_valid_keys():
    with pytest.raises(ArgumentError) as ei:
        parse_boot_opts({"memroy": "1G"}, "vm `a`: boot")
    msg = str(ei.value)
    assert "unknown boot option `memroy`" in msg
    for key in ("memory", "cpus", "kernel_cmdline", "kernel_cmdline_append", "rng_seed", "initial_time",
                "files", "disks", "agent_boot_timeout"):
        assert key in msg


def test_boot_opts_merge_scalars_override_lists_append():
    base = parse_boot_opts({"memory": "256M", "cpus": 2, "files": [{"path": "/etc/a", "content": "1"}]}, "c")
    over = parse_boot_opts({"memory": 1 << 30, "files": [{"path": "b/c", "content": b"2", "mode": 0o755}],
                            "agent_timeout": "45s"}, "b")
    m = base.merged(over)
    assert m.memory == 1 << 30 and m.cpus == 2 and m.agent_boot_timeout == 45
    assert [(f.path, f.content, f.mode) for f in m.files] == [("/etc/a", b"1", 0o644), ("/b/c", b"2", 0o755)]
    spec = make_spec("a", Profile("p", memory=None), m, default_memory=512 << 20, default_cpus=1)
    assert spec.memory_bytes == 1 << 30 and spec.cpus == 2 and len(spec.files) == 2
    spec = make_spec("a", Profile("p", memory=64 << 20, cpus=3), BootOpts(), default_memory=512 << 20, default_cpus=1)
    assert (spec.memory_bytes, spec.cpus) == (64 << 20, 3)


@pytest.mark.parametrize("opts, needle", [
    ({"memory": "huge"}, "boot_opts.memory: cannot parse size"),
    ({"cpus": 0}, "boot_opts.cpus"),
    ({"initial_time": float("nan")}, "boot_opts.initial_time: NaN/inf not allowed"),
    ({"initial_time": "now"}, "boot_opts.initial_time: expected number (seconds since epoch), got string"),
    ({"files": [{"path": "/a/../b", "content": ""}]}, "may not contain `.` or `..`"),
    ({"files": [{"path": "/", "content": ""}]}, "names no file"),
    ({"files": [{"path": "/x", "content": "", "mode": "rw"}]}, "must be an integer permission mask"),
    ({"files": [{"path": "/x"}]}, "needs `path` and exactly one of `content` or `host`"),
    ({"disks": [{"path": ""}]}, "boot_opts.disks: `path` must not be empty"),
    ({"disks": [{"path": "/d", "readonly": "yes"}]}, "`readonly` must be a boolean"),
    ({"agent_boot_timeout": 0}, "positive number of seconds"),
    ({"rng_seed": -1}, "boot_opts.rng_seed"),
])
def test_boot_opts_errors(opts, needle):
    with pytest.raises(ArgumentError) as ei:
        parse_boot_opts(opts, "vm `a`")
    assert needle in str(ei.value)


def test_boot_disk_ids_default_after_staged_ones():
    o = parse_boot_opts({"disks": [{"path": "/a"}, {"path": "/b", "id": "data"}]}, "x", disk_index=1)
    assert [(d.id, d.path) for d in o.disks] == [("boot1", "/a"), ("data", "/b")]


# ---- results and state errors ------------------------------------------------------------

def test_run_result_statuses():
    r = RunResult.from_exec(ExecOk(ExitStatus.exited(0), b"hi\n", b""))
    assert r.ok() and r.exit_code == 0 and r.status == "exited" and not r.timed_out and r.signal is None
    r.assert_ok()
    assert str(r) == "RunResult{ status=exited, stdout=3B, stderr=0B }"
    s = RunResult.from_exec(ExecOk(ExitStatus.signalled(9)))
    assert (s.status, s.exit_code, s.signal, s.ok()) == ("signalled", -1, 9, False)
    t = RunResult.from_exec(ExecOk(ExitStatus.timed_out(), b"partial"))
    assert (t.status, t.exit_code, t.timed_out, t.stdout) == ("timed_out", -2, True, b"partial")
    neg = RunResult.from_exec(ExecOk(ExitStatus.exited(-1)))
    assert not neg.ok()


def test_assert_ok_message_carries_output():
    r = RunResult.from_exec(ExecOk(ExitStatus.exited(3), b"out", b'bad "thing"\n'))
    with pytest.raises(CommandFailed) as ei:
        r.assert_ok()
    assert str(ei.value) == 'command failed: status=exited code=3 stdout="out" stderr="bad \\"thing\\"\\n"'
    with pytest.raises(CommandFailed, match=r"status=signalled signal=9 \(SIGKILL\)"):
        RunResult.from_exec(ExecOk(ExitStatus.signalled(9))).assert_ok()
    with pytest.raises(CommandFailed, match="status=timed_out"):
        RunResult.from_exec(ExecOk(ExitStatus.timed_out())).assert_ok()


@pytest.mark.parametrize("state, action, text", [
    ("created", "run", "vm `a`: VM not booted (cannot run)"),
    ("booted", "boot", "vm `a`: VM already booted (cannot boot)"),
    ("paused", "stat", "vm `a`: VM is paused; use resume() (cannot stat)"),
    ("shutdown", "read_file", "vm `a`: VM is shutdown; create a new one (cannot read_file)"),
    ("dead", "run", "vm `a`: VM died; create a new one (cannot run)"),
    ("booted", "resume", "vm `a`: VM is in an unexpected state for this op (cannot resume)"),
])
def test_wrong_state_wording(state, action, text):
    assert str(WrongState("a", state, action)) == text


def test_boot_file_from_host_with_libraries(tmp_path):
    import shutil

    from provium.host.bootopts import parse_boot_opts
    ls = shutil.which("ls")
    opts = parse_boot_opts({"files": [{"path": "/bin/gls", "host": ls, "libs": True}]}, "vm `a`: boot")
    paths = [f.path for f in opts.files]
    assert paths[-1] == "/bin/gls" and opts.files[-1].mode == 0o755
    assert any("libc.so" in p for p in paths) and any("ld-linux" in p for p in paths)
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    opts = parse_boot_opts({"files": [{"path": "/s", "host": str(script), "libs": True}]}, "w")
    assert [(f.path, f.mode) for f in opts.files] == [("/s", 0o750)]  # a script links nothing


@pytest.mark.parametrize("files, message", [
    ([{"path": "/x", "content": "a", "host": "/bin/ls"}], "exactly one of `content` or `host`"),
    ([{"path": "/x", "content": "a", "libs": True}], "`libs` needs `host`"),
    ([{"path": "/x", "host": "/bin/ls", "libs": 1}], "`libs` must be a boolean"),
    ([{"path": "/x", "host": "/nonexistent/prog"}], "boot_opts.files[1]: host file `/nonexistent/prog`"),
    ([{"path": "/x", "host": "/tmp"}], "is not a regular file"),
])
def test_boot_file_from_host_errors(files, message):
    from provium.host.bootopts import parse_boot_opts
    from provium.host.errors import ArgumentError
    with pytest.raises(ArgumentError) as e:
        parse_boot_opts({"files": files}, "w")
    assert message in str(e.value)


def test_guest_hostname():
    from provium.image.boot import guest_hostname
    assert guest_hostname("web_1") == "web-1"
    assert guest_hostname("db") == "db"
    assert guest_hostname("__") == "provium"
    assert len(guest_hostname("a" * 100)) == 63


def test_shares_are_parsed_and_tagged(tmp_path):
    from provium.config import Profile
    opts = parse_boot_opts({"shares": [{"host": str(tmp_path), "guest": "/mnt/b/", "readonly": True}]}, "w")
    spec = make_spec("a", Profile(name="p"), opts, default_memory=1 << 29, default_cpus=1)
    assert [(s.host, s.guest, s.readonly, s.tag) for s in spec.shares] == [
        (str(tmp_path.resolve()), "/mnt/b", True, "provium0")]


@pytest.mark.parametrize("shares, message", [
    ({"host": "/tmp"}, "expected an array"),
    ([{"host": "/tmp", "guest": "mnt"}], "`guest` must be an absolute guest path"),
    ([{"host": "/tmp", "guest": "/mnt/../etc"}], "plain absolute path"),
    ([{"host": "/tmp", "guest": "/"}], "plain absolute path"),
    ([{"host": "/nonexistent/dir", "guest": "/mnt"}], "host directory `/nonexistent/dir` does not exist"),
    ([{"host": "/tmp", "guest": "/mnt", "readonly": "yes"}], "`readonly` must be a boolean"),
    ([{"host": "/tmp", "guest": "/mnt", "ro": True}], "unknown key `ro`"),
])
def test_share_errors(shares, message):
    with pytest.raises(ArgumentError) as e:
        parse_boot_opts({"shares": shares}, "w")
    assert message in str(e.value)

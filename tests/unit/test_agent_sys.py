"""syscall, ioctl, read_mem and the clock ops against the real agent subprocess.

The clock is only ever *read* here: every agent in these tests runs in local
mode, which refuses set_time/advance_clock, and that refusal is what we test.
"""

from __future__ import annotations

import os
import struct
import time

import pytest

from agent_client_util import agent_env, spawn_agent
from provium.protocol.messages import (
    AdvanceClockArgs,
    CloseArgs,
    GetTimeArgs,
    IoctlArgs,
    OpenFileArgs,
    ReadFileArgs,
    ReadMemArgs,
    SetTimeArgs,
    SleepClockArgs,
    SpawnWorkerArgs,
    SyscallArgs,
    WorkerJoinArgs,
    WorkerSyscallArgs,
)
from provium.protocol.types import NestedPtr, OpenMode

SYS_WRITEV, SYS_GETPID, SYS_UNAME, SYS_OPENAT, SYS_CLOSE = 20, 39, 63, 257, 3
AT_FDCWD = -100
FIONREAD = 0x541B


def test_syscall_getpid_is_the_agent(agent):
    r = agent.ok(SyscallArgs(SYS_GETPID))
    assert (r.ret, r.errno, r.out_bufs) == (agent.proc.pid, 0, [])


def test_syscall_errno_only_on_failure(agent):
    r = agent.ok(SyscallArgs(99999))
    assert (r.ret, r.errno) == (-1, 38)
    r = agent.ok(SyscallArgs(SYS_CLOSE, [987654]))
    assert (r.ret, r.errno) == (-1, 9)


def test_syscall_uname_fills_an_out_buffer(agent):
    r = agent.ok(SyscallArgs(SYS_UNAME, [0] * 6, bufs=[b"\0" * 390], ptrs=[0]))
    assert r.ret == 0 and r.errno == 0
    (buf,) = r.out_bufs
    assert len(buf) == 390
    fields = [buf[i * 65:(i + 1) * 65].split(b"\0")[0] for i in range(6)]
    assert fields[0] == b"Linux" and fields[2].decode() == os.uname().release


def test_syscall_nested_pointers_build_an_iovec(agent, tmp_path):
    path = tmp_path / "via-writev"
    r = agent.ok(SyscallArgs(SYS_OPENAT, [AT_FDCWD, 0, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644],
                             bufs=[str(path).encode() + b"\0"], ptrs=[1]))
    assert r.errno == 0 and r.ret >= 0
    fd = r.ret
    payload = b"spliced through a nested pointer"
    iov = struct.pack("QQ", 0, len(payload))  # iov_base filled in by the agent
    r = agent.ok(SyscallArgs(SYS_WRITEV, [fd, 0, 1], bufs=[iov, payload], ptrs=[1],
                             nested=[NestedPtr(parent=0, child=1, offset=0)]))
    assert (r.ret, r.errno) == (len(payload), 0)
    base = struct.unpack_from("Q", r.out_bufs[0])[0]
    assert base != 0  # the out buffer shows the address the agent wrote
    assert agent.ok(SyscallArgs(SYS_CLOSE, [fd])).ret == 0
    assert agent.value(ReadFileArgs(str(path))).data == payload


@pytest.mark.parametrize("op, needle", [
    (SyscallArgs(SYS_GETPID, [0] * 7), "at most 6 args"),
    (SyscallArgs(SYS_UNAME, bufs=[b"x"], ptrs=[6]), "not an arg slot"),
    (SyscallArgs(SYS_UNAME, bufs=[b"x"], ptrs=[0, 1]), "2 ptrs but only 1 bufs"),
    (SyscallArgs(SYS_UNAME, bufs=[b"x" * 8, b"y"], nested=[NestedPtr(0, 5, 0)]), "child index 5"),
    (SyscallArgs(SYS_UNAME, bufs=[b"x" * 8, b"y"], nested=[NestedPtr(0, 1, 1)]), "does not fit"),
])
def test_syscall_bad_layouts_are_bad_requests(agent, op, needle):
    err = agent.error(op)
    assert err.kind.value == "bad_request" and needle in err.message


def test_ioctl_fionread_on_a_file(agent, tmp_path):
    path = tmp_path / "ten"
    path.write_bytes(b"0123456789")
    h = agent.value(OpenFileArgs(str(path), OpenMode(read=True)))
    res = agent.value(IoctlArgs(h, FIONREAD, data=b"\0" * 4))
    assert res.ret == 0 and struct.unpack("i", res.out_data)[0] == 10
    res = agent.ok(IoctlArgs(h, 0x5401, data=b"\0" * 64))  # TCGETS on a regular file
    assert not res.ok and res.value.errno == 25
    err = agent.error(IoctlArgs(h, FIONREAD, data=b"\0" * 4, bufs=[b"x"], ptr_offsets=[0]))
    assert err.kind.value == "bad_request" and "does not fit" in err.message
    err = agent.error(IoctlArgs(h, FIONREAD, data=b"\0" * 16, bufs=[b"x"], ptr_offsets=[]))
    assert err.kind.value == "bad_request"
    agent.value(CloseArgs(h))
    err = agent.error(IoctlArgs(h, FIONREAD))
    assert err.kind.value == "unknown_handle" and f"file#{h}" in err.message


def test_read_mem_reads_the_agents_own_memory(agent):
    # The first mapping of the interpreter's executable starts with its ELF header.
    with open(f"/proc/{agent.proc.pid}/maps") as f:
        for line in f:
            parts = line.split()
            if parts[1].startswith("r") and parts[2] == "00000000" and len(parts) > 5 and "python" in parts[5]:
                addr = int(parts[0].split("-")[0], 16)
                break
        else:
            pytest.skip("no mapped python image found")
    assert agent.value(ReadMemArgs(addr, 4)).bytes == b"\x7fELF"
    res = agent.ok(ReadMemArgs(0, 16))
    assert not res.ok and res.value.errno in (5, 14)
    res = agent.ok(ReadMemArgs(1 << 63, 16))
    assert not res.ok


def test_get_time_is_the_wall_clock(agent):
    ns = agent.value(GetTimeArgs()).ns
    assert abs(ns - time.time_ns()) < 5_000_000_000


def test_clock_changes_are_refused_on_the_host(agent):
    before = time.time_ns()
    for op in (SetTimeArgs(0), AdvanceClockArgs(3600 * 10**9), AdvanceClockArgs(-10**9)):
        res = agent.ok(op)
        assert not res.ok and res.value.errno == 1
        assert "never changes the host clock" in res.value.message
    assert abs(time.time_ns() - before) < 5_000_000_000


def test_fd_mode_is_local_even_without_the_variable():
    env = agent_env()
    del env["PROVIUM_AGENT_LOCAL"]
    c = spawn_agent(env=env)
    try:
        res = c.ok(SetTimeArgs(0))
        assert not res.ok and res.value.errno == 1
        # ... and its workers are told so on their command line.
        w = c.value(SpawnWorkerArgs())
        pid = c.ok(WorkerSyscallArgs(w, SyscallArgs(SYS_GETPID))).ret
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"--local" in f.read().split(b"\0")
        c.value(WorkerJoinArgs(w))
    finally:
        c.close()


def test_sleep_clock(agent):
    t0 = time.monotonic()
    assert agent.ok(SleepClockArgs(100_000_000)).ok
    assert time.monotonic() - t0 >= 0.095
    err = agent.error(SleepClockArgs(-1))
    assert err.kind.value == "bad_request"

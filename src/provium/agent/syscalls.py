"""Raw system calls, ioctl and reads of the agent's own memory (layer 0).

ctypes is imported on first use only: most sessions never make a raw call and
the agent's start-up time matters inside a guest.

Buffer rules (`syscall`): every `bufs[i]` is copied into memory the agent owns;
then each `nested` entry writes the address of `bufs[child]` into `bufs[parent]`
at byte `offset` (native-endian pointer, bounds-checked); then `ptrs[i]` names
the argument slot that receives the address of `bufs[i]`.  Indices are 0-based.
After the call the buffers' contents come back as `out_bufs`.
"""

from __future__ import annotations

import os
import threading

from provium.protocol.core import OpResult
from provium.protocol.ops_syscalls import IoctlOk, ReadMemOk, SyscallResult

from .base import BAD_REQUEST, UNKNOWN_HANDLE, AgentFail, os_fail, unknown

MAX_ARGS = 6
MAX_READ_MEM = 64 << 20
EFAULT = 14
EINVAL = 22
_MASK = (1 << 64) - 1

_lib = None
_lib_lock = threading.Lock()


def _libc():
    global _lib
    with _lib_lock:
        if _lib is None:
            import ctypes

            lib = ctypes.CDLL(None, use_errno=True)
            lib.syscall.restype = ctypes.c_long
            lib.syscall.argtypes = [ctypes.c_long] * (MAX_ARGS + 1)
            lib.ioctl.restype = ctypes.c_int
            lib.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
            _lib = (ctypes, lib)
        return _lib


def preload() -> None:
    """Load ctypes now (a worker does this before it drops its privileges)."""
    _libc()


def _i64(v: int) -> int:
    v &= _MASK
    return v - (1 << 64) if v >= 1 << 63 else v


def _buffers(ctypes, op_name: str, bufs: list[bytes]):
    # At least one byte each, so even an empty buffer has a real address.
    return [ctypes.create_string_buffer(bytes(b), max(1, len(b))) for b in bufs]


def _splice(ctypes, op_name: str, target, target_len: int, offset: int, addr: int, what: str) -> None:
    size = ctypes.sizeof(ctypes.c_void_p)
    if offset < 0 or offset + size > target_len:
        raise AgentFail(BAD_REQUEST,
                        f"{op_name}: {what}: offset {offset} + {size}-byte pointer does not fit in a "
                        f"{target_len}-byte buffer")
    ptr = ctypes.c_void_p(addr)  # memmove: the offset need not be aligned
    ctypes.memmove(ctypes.addressof(target) + offset, ctypes.addressof(ptr), size)


def prepare_syscall(op, op_name: str = "syscall"):
    """Validate and lay out a syscall; returns a function that makes the call."""
    ctypes, lib = _libc()
    if len(op.args) > MAX_ARGS:
        raise AgentFail(BAD_REQUEST, f"{op_name}: at most {MAX_ARGS} args (got {len(op.args)})")
    args = [_i64(a) for a in op.args] + [0] * (MAX_ARGS - len(op.args))
    lens = [len(b) for b in op.bufs]
    bufs = _buffers(ctypes, op_name, op.bufs)
    for n in op.nested:
        for idx, role in ((n.parent, "parent"), (n.child, "child")):
            if not 0 <= idx < len(bufs):
                raise AgentFail(BAD_REQUEST,
                                f"{op_name}: nested {role} index {idx} names no buffer "
                                f"(there are {len(bufs)}; indices start at 0)")
        _splice(ctypes, op_name, bufs[n.parent], lens[n.parent], n.offset,
                ctypes.addressof(bufs[n.child]), f"nested pointer into buffer {n.parent}")
    if len(op.ptrs) > len(bufs):
        raise AgentFail(BAD_REQUEST,
                        f"{op_name}: {len(op.ptrs)} ptrs but only {len(bufs)} bufs "
                        "(ptrs[i] is the arg slot for bufs[i])")
    for i, slot in enumerate(op.ptrs):
        if not 0 <= slot < MAX_ARGS:
            raise AgentFail(BAD_REQUEST, f"{op_name}: ptrs[{i}] = {slot} is not an arg slot (0..5)")
        args[slot] = ctypes.addressof(bufs[i])
    nr = _i64(op.nr)

    def call() -> SyscallResult:
        ctypes.set_errno(0)
        ret = lib.syscall(nr, *args)
        err = ctypes.get_errno() if ret < 0 else 0
        out = [b.raw[:n] for b, n in zip(bufs, lens)]
        return SyscallResult(ret=ret, errno=err, out_bufs=out)

    return call


def syscall(ctx, op):
    return prepare_syscall(op)()


def ioctl(ctx, op):
    entry = ctx.state.get(ctx.state.files, op.handle)
    if entry is None:
        raise unknown("ioctl", "file", op.handle)
    ctypes, lib = _libc()
    if len(op.ptr_offsets) != len(op.bufs):
        raise AgentFail(BAD_REQUEST,
                        f"ioctl: {len(op.ptr_offsets)} ptr_offsets for {len(op.bufs)} bufs "
                        "(ptr_offsets[i] is where bufs[i]'s address goes in data)")
    lens = [len(b) for b in op.bufs]
    bufs = _buffers(ctypes, "ioctl", op.bufs)
    data = ctypes.create_string_buffer(bytes(op.data), max(1, len(op.data)))
    for i, off in enumerate(op.ptr_offsets):
        _splice(ctypes, "ioctl", data, len(op.data), off, ctypes.addressof(bufs[i]), f"ptr_offsets[{i}]")
    ctypes.set_errno(0)
    ret = lib.ioctl(entry.fd, op.cmd & _MASK, ctypes.addressof(data) if op.data else None)
    if ret < 0:
        e = ctypes.get_errno()
        return OpResult.failure(e, f"ioctl: {entry.path} (cmd {op.cmd:#x}): {os.strerror(e)}")
    return OpResult.success(IoctlOk(
        ret=ret, out_data=data.raw[:len(op.data)], out_bufs=[b.raw[:n] for b, n in zip(bufs, lens)],
    ))


def read_mem(ctx, op):
    if op.len < 0 or op.len > MAX_READ_MEM:
        return OpResult.failure(EINVAL, f"read_mem: len {op.len} is outside 0..{MAX_READ_MEM}")
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return os_fail("read_mem", exc, "/proc/self/mem")
    try:
        return OpResult.success(ReadMemOk(os.pread(fd, op.len, op.addr)))
    except OSError as exc:
        return os_fail("read_mem", exc, f"{op.addr:#x}+{op.len}")
    except OverflowError:
        return OpResult.failure(EFAULT, f"read_mem: address {op.addr:#x} is out of range")
    finally:
        os.close(fd)


# ---- async syscalls run by this process (a worker, or handle 0) ----------------


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = None
        self.error: AgentFail | None = None


def begin_local(ctx, args) -> OpResult:
    call = prepare_syscall(args, "worker_syscall_begin")  # bad args fail now, not at await
    pending = _Pending()
    async_id = ctx.state.new_async_id()
    with ctx.state.lock:
        ctx.state.async_calls[async_id] = pending

    def run() -> None:
        try:
            pending.result = call()
        except Exception as exc:
            pending.error = AgentFail("internal", f"worker_syscall: {type(exc).__name__}: {exc}")
        finally:
            pending.done.set()

    threading.Thread(target=run, daemon=True, name=f"async-syscall-{async_id}").start()
    return OpResult.success(async_id)


def await_local(ctx, async_id: int) -> SyscallResult:
    pending = ctx.state.get(ctx.state.async_calls, async_id)
    if pending is None:
        raise AgentFail(UNKNOWN_HANDLE,
                        f"worker_syscall_await: unknown async syscall id {async_id} "
                        "(never begun, or already awaited)")
    pending.done.wait()
    ctx.state.pop(ctx.state.async_calls, async_id)
    if pending.error is not None:
        raise pending.error
    return pending.result


HANDLERS = {"syscall": syscall, "ioctl": ioctl, "read_mem": read_mem}

"""Plain result values returned by VM, worker and process methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol.messages import ExecOk
from ..protocol.framing import OUTPUT_CAP, output_marker
from ..protocol.types import EntryType
from .errors import CommandFailed
from .values import signal_name

EXIT_SIGNALLED = -1
EXIT_TIMED_OUT = -2


def debug_quote(data: bytes, limit: int = 4096) -> str:
    """Double-quoted, escaped rendering of captured output for error messages."""
    text = data[:limit].decode("utf-8", "replace")
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    if len(data) > limit:
        out.append(f"...(+{len(data) - limit} bytes)")
    return "".join(out)


@dataclass(frozen=True)
class RunResult:
    """What a finished command did.

    `status` is "exited", "signalled" or "timed_out"; `exit_code` is the exit
    code, or -1 when signalled and -2 when timed out; `signal` is the signal
    number when signalled, else None.
    """

    status: str
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    signal: int | None = None

    @classmethod
    def from_exec(cls, ok: ExecOk) -> "RunResult":
        st = ok.status
        out, err = _capped(ok.stdout, "stdout"), _capped(ok.stderr, "stderr")
        if st.kind == "exited":
            return cls("exited", int(st.value or 0), out, err)
        if st.kind == "signalled":
            return cls("signalled", EXIT_SIGNALLED, out, err, int(st.value or 0))
        return cls("timed_out", EXIT_TIMED_OUT, out, err)

    @property
    def timed_out(self) -> bool:
        return self.status == "timed_out"

    def ok(self) -> bool:
        return self.status == "exited" and self.exit_code == 0

    def detail(self) -> str:
        if self.status == "exited":
            return f"status=exited code={self.exit_code}"
        if self.status == "signalled":
            return f"status=signalled signal={self.signal} ({signal_name(self.signal or 0)})"
        return "status=timed_out"

    def assert_ok(self) -> None:
        if not self.ok():
            raise CommandFailed(
                f"command failed: {self.detail()} stdout={debug_quote(self.stdout)} "
                f"stderr={debug_quote(self.stderr)}",
                self,
            )

    def __str__(self) -> str:
        return f"RunResult{{ status={self.status}, stdout={len(self.stdout)}B, stderr={len(self.stderr)}B }}"


def _capped(data: bytes, stream: str) -> bytes:
    """The host keeps the agent's cap too: an agent that sent more (not ours,
    or an old one) is cut the same way, marker included."""
    if len(data) <= OUTPUT_CAP:
        return data
    rest = data[OUTPUT_CAP:]
    if rest.startswith(b"\n[provium: ") and len(rest) <= len(output_marker(stream, 1 << 62)):
        return data  # the agent capped it already
    return data[:OUTPUT_CAP] + output_marker(stream, len(rest))


# The wire spells entry types as the Lua API does (the reference's names).
ENTRY_TYPES = tuple(e.value for e in EntryType)


def entry_name(t: EntryType | str) -> str:
    return t.value if isinstance(t, EntryType) else str(t)


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int
    perm: int
    entry_type: str  # file | directory | symlink | fifo | socket | block_device | char_device | other

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    def as_dict(self) -> dict:
        return {"size": self.size, "mtime": self.mtime, "mtime_ns": self.mtime_ns,
                "perm": self.perm, "entry_type": self.entry_type}


@dataclass(frozen=True)
class DirEntry:
    name: str
    entry_type: str

    def as_dict(self) -> dict:
        return {"name": self.name, "entry_type": self.entry_type}


@dataclass(frozen=True)
class SyscallOutcome:
    """A raw syscall's outcome: `ret` (also `result`), `errno` (0 on success) and
    the contents of the passed buffers after the call."""

    ret: int
    errno: int = 0
    out_bufs: list[bytes] = field(default_factory=list)

    @property
    def result(self) -> int:
        return self.ret

    def as_dict(self, alias: bool = True) -> dict:
        d = {"ret": self.ret, "errno": self.errno, "out_bufs": list(self.out_bufs)}
        if alias:
            d["result"] = self.ret
        return d


@dataclass(frozen=True)
class IoctlOutcome:
    ret: int
    out_data: bytes = b""
    out_bufs: list[bytes] = field(default_factory=list)

    @property
    def result(self) -> int:
        return self.ret

    def as_dict(self) -> dict:
        return {"ret": self.ret, "result": self.ret, "out_data": self.out_data, "out_bufs": list(self.out_bufs)}

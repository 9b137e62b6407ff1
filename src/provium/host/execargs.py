"""Turning `run(cmd, opts)` arguments into wire `ExecArgs` / `RunAsyncArgs`.

Shared by `vm.run`, `vm.run_async`, `worker.run`, `worker.run_async` and
`batch.run`, so every entry point accepts the same spellings:

* `"echo hi | wc"`      -> `sh -c "echo hi | wc"`
* `["echo", "hi"]`      -> direct exec, argv as given
* `"echo", {"args": ["hi"]}` -> direct exec of `echo` with those args
"""

from __future__ import annotations

import re

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.messages import ExecArgs, RunAsyncArgs
from .errors import ArgumentError
from .values import MAX_DURATION, duration_ms, parse_duration, type_name

RUN_OPTS = ("args", "stdin", "env", "env_clear", "cwd", "timeout", "timeout_ms")


@dataclass
class Command:
    cmd: str
    args: list[str]
    env: dict[str, str]
    env_clear: bool
    cwd: str | None
    stdin: bytes | None
    timeout_ms: int | None

    def exec_args(self) -> ExecArgs:
        return ExecArgs(cmd=self.cmd, args=self.args, env=self.env, env_clear=self.env_clear,
                        stdin=self.stdin or b"", cwd=self.cwd, timeout_ms=self.timeout_ms)

    def run_async_args(self) -> RunAsyncArgs:
        return RunAsyncArgs(cmd=self.cmd, args=self.args, env=self.env, env_clear=self.env_clear, cwd=self.cwd)


def _strings(value: Any, method: str, what: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ArgumentError(f"{method}: `{what}` must be a list of strings, got {type_name(value)}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise ArgumentError(f"{method}: `{what}`[{i + 1}] must be a string, got {type_name(v)}")
        out.append(v)
    return out


def to_bytes(value: Any, method: str, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ArgumentError(f"{method}: `{what}` must be a string or bytes, got {type_name(value)}")


# One simple command: words of plain characters, no quoting, expansion,
# redirection, pipes, lists or globs.  The first word must not be an assignment.
_SIMPLE = re.compile(r"[\w./:,+@%-]+(?:[ \t]+[\w./:,+@%=-]+)*")
# Words `sh` runs itself: `exec` would look for a program of that name.
_BUILTINS = frozenset("""exit cd export set unset read wait eval exec shift trap umask ulimit alias unalias
return source . : break continue readonly local type hash command getopts times jobs fg bg""".split())


def shell_text(cmd: str) -> str:
    """`cmd` for `sh -c`, with `exec ` in front when it is a single program.

    Then the program replaces the shell: its pid is the process's pid and a
    signal (`p:kill("int")`) reaches it instead of a waiting `sh`.  Anything
    the shell itself must interpret is left as written."""
    text = cmd.strip()
    if _SIMPLE.fullmatch(text) and text.split()[0] not in _BUILTINS:
        return "exec " + text
    return cmd


def build_command(method: str, cmd: Any, opts: Mapping | None, *, async_: bool = False) -> Command:
    """Validate and normalise. `method` (e.g. "vm:run") prefixes every error."""
    if opts is None:
        opts = {}
    if not isinstance(opts, Mapping):
        raise ArgumentError(f"{method}: options must be a table/dict, got {type_name(opts)}")
    unknown = [k for k in opts if k not in RUN_OPTS]
    if unknown:
        raise ArgumentError(f"{method}: unknown option `{unknown[0]}` (valid: {', '.join(RUN_OPTS)})")

    if cmd is None:
        raise ArgumentError(f"{method} expects at least a command string")
    if isinstance(cmd, str):
        if "args" in opts:
            program, args = cmd, _strings(opts["args"], method, "args")
        else:
            program, args = "sh", ["-c", shell_text(cmd)]
    elif isinstance(cmd, Sequence) and not isinstance(cmd, (bytes, bytearray)):
        argv = _strings(cmd, method, "command")
        if not argv:
            raise ArgumentError(f"{method}: the command list is empty (expected [program, arg, ...])")
        if "args" in opts:
            raise ArgumentError(f"{method}: give the arguments either in the command list or as `args`, not both")
        program, args = argv[0], argv[1:]
    else:
        raise ArgumentError(f"{method}: first argument must be a string (run through `sh -c`) "
                            f"or a list of strings (argv), got {type_name(cmd)}")
    if not program:
        raise ArgumentError(f"{method}: the command is empty")

    env: dict[str, str] = {}
    if opts.get("env") is not None:
        e = opts["env"]
        if not isinstance(e, Mapping):
            raise ArgumentError(f"{method}: `env` must be a map of string to string, got {type_name(e)}")
        for k, v in e.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ArgumentError(f"{method}: `env` must map strings to strings "
                                    f"(got {type_name(k)} -> {type_name(v)})")
            env[k] = v
    env_clear = opts.get("env_clear", False)
    if env_clear is None:
        env_clear = False
    if not isinstance(env_clear, bool):
        raise ArgumentError(f"{method}: `env_clear` must be a boolean, got {type_name(env_clear)}")
    cwd = opts.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ArgumentError(f"{method}: `cwd` must be a string path, got {type_name(cwd)}")
    stdin = None if opts.get("stdin") is None else to_bytes(opts["stdin"], method, "stdin")

    timeout_ms = None
    has_timeout = opts.get("timeout") is not None or opts.get("timeout_ms") is not None
    if has_timeout and async_:
        raise ArgumentError(f"{method}: `timeout` is not honoured here; pass it to `proc:wait(timeout)` instead")
    if opts.get("timeout") is not None and opts.get("timeout_ms") is not None:
        raise ArgumentError(f"{method}: give either `timeout` or `timeout_ms`, not both")
    if opts.get("timeout_ms") is not None:
        t = opts["timeout_ms"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ArgumentError(f"{method}: `timeout_ms` must be a non-negative integer, got {t!r}")
        if t > MAX_DURATION * 1000:  # the same upper bound as `timeout`
            raise ArgumentError(f"{method}: `timeout_ms` {t} is too long (at most {MAX_DURATION * 1000:.0e} ms, "
                                "about 31 years; for no limit leave it out)")
        timeout_ms = t
    elif opts.get("timeout") is not None:
        timeout_ms = duration_ms(parse_duration(opts["timeout"], f"{method} timeout"))
    if timeout_ms == 0:
        raise ArgumentError(f"{method}: timeout=0 would kill the command before it starts; "
                            "pass a positive timeout (e.g. \"5s\") or none")
    return Command(program, args, env, env_clear, cwd, stdin, timeout_ms)

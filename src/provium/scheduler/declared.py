"""What a file declares, read from its source before it runs: its claim and its VMs.

`provium:claim{memory="4G", cpus=2}` written with literal values is found by a
scan of the text (like the fixture references), so a file that claims more than
the whole pool fails at dispatch, at once, instead of after it started; the
amount also goes into `file_discovered.declared_claim`.  Anything not literal
is left to the claim itself at run time.

The VMs a file creates (`lab:vm(name, profile[, {memory=, cpus=}])`) are found
the same way, for the Ray executor: a file's task must ask Ray for what the
file will hold before it starts (scheduler/charge.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from provium.events.types import ResourceAmount

_CLAIM = re.compile(r"""[:.]claim\s*\(?\s*\{([^{}]*)\}""")
_MEM = re.compile(r"""\bmemory\s*=\s*(?:(["'])([0-9]+)\s*([KkMmGgTt]?)\1|([0-9]+)\b)""")
_CPUS = re.compile(r"""\bcpus\s*=\s*([0-9]+)\b""")


def _strip_comments(text: str) -> str:
    return re.sub(r"--\[(=*)\[.*?\]\1\]|--[^\n]*", "", text, flags=re.DOTALL)


def declared_claim(path: str) -> ResourceAmount | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = _strip_comments(f.read(1 << 20))
    except OSError:
        return None
    m = _CLAIM.search(text)
    if m is None:
        return None
    body = m.group(1)
    if re.sub(r"[\s,;]", "", _CPUS.sub("", _MEM.sub("", body))):
        return None  # not all literal: the claim decides at run time
    mem = 0
    mm = _MEM.search(body)
    if mm:
        if mm.group(4) is not None:
            mem = int(mm.group(4))
        else:
            mem = int(mm.group(2)) << (10 * " KMGT".index((mm.group(3) or " ").upper()))
    cm = _CPUS.search(body)
    return ResourceAmount(mem, int(cm.group(1)) if cm else 0)


# ---- the VMs a file declares ----------------------------------------------------------

_VM_CALL = re.compile(r"""[:.]vm\s*\(""")
_FIXTURE_CALL = re.compile(r"""\b(?:vm_fixture|lab_fixture)\s*\(\s*(?:[A-Za-z_][\w.]*\s*,\s*)?(["'])([^"'\n]*)\1""")
_LITERAL_STR = re.compile(r"""^\s*(["'])([^"'\n]*)\1\s*$""")


@dataclass(frozen=True)
class DeclaredVm:
    """One `lab:vm(name, profile[, opts])` creation found in a file's source.

    Fields are None where the source does not say it literally (a name built at run
    time, a profile from a variable, no `memory` in the opts): the charge then uses
    the profile's or the run's defaults, as the boot would."""

    name: str | None
    profile: str | None
    memory: int | None = None
    cpus: int | None = None
    source: str = ""  # the file it was found in (a fixture's, for a fixture's VMs)


def _call_args(text: str, start: int) -> list[str] | None:
    """The top-level arguments of the call whose `(` is just before `start`
    (None when the parentheses never close).  Strings and nested brackets are
    skipped, so `vm("a", "p", {memory = f("x, y")})` has three arguments."""
    depth, quote, args, cur = 0, "", [], start
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            if depth == 0:
                args.append(text[cur:i])
                return args if len(args) > 1 or args[0].strip() else []
            depth -= 1
        elif ch in ",;" and depth == 0:  # `;` separates table fields too
            args.append(text[cur:i])
            cur = i + 1
        i += 1
    return None


def _literal(arg: str) -> str | None:
    m = _LITERAL_STR.match(arg)
    return m.group(2) if m else None


_ENTRY_MEM = re.compile(r"""\s*memory\s*=\s*(?:(["'])([0-9]+)\s*([KkMmGgTt]?)\1|([0-9]+))\s*""")
_ENTRY_CPUS = re.compile(r"""\s*cpus\s*=\s*([0-9]+)\s*""")


def _size(table: str) -> tuple[int | None, int | None]:
    """`memory`/`cpus` of a literal opts table, each only when its whole value is literal."""
    mem = cpus = None
    for entry in _call_args(table.strip(), 1) or []:
        mm = _ENTRY_MEM.fullmatch(entry)
        if mm:
            if mm.group(4) is not None:
                mem = int(mm.group(4))
            else:
                mem = int(mm.group(2)) << (10 * " KMGT".index((mm.group(3) or " ").upper()))
        cm = _ENTRY_CPUS.fullmatch(entry)
        if cm:
            cpus = int(cm.group(1))
    return mem, cpus


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _strip_comments(f.read(1 << 20))
    except OSError:
        return None


def declared_vms(path: str, roots: list[str] | None = None, _seen: frozenset[str] = frozenset()) -> list[DeclaredVm]:
    """Every VM the file creates, by a scan of its text, in source order, and for
    each literal `vm_fixture`/`lab_fixture` found in `roots` the fixture's own VMs
    (its build boots them in this file's runner, a restore boots them again).

    A creation is a `vm(...)` call with two or more arguments (one argument is a
    lookup).  Each creation counts once: a VM created in a loop counts once, one
    created in every test counts once per test, though test-scope VMs are shut
    down at each test's end.  That is the same upper bound the local pool would
    see if every declared VM were up at once; a file that knows its real peak
    says so with `provium:claim{...}`, which the charge then uses instead."""
    text = _read(path)
    if text is None:
        return []
    out: list[DeclaredVm] = []
    for m in _VM_CALL.finditer(text):
        args = _call_args(text, m.end())
        if args is None or len(args) < 2:
            continue
        mem = cpus = None
        if len(args) >= 3 and args[2].strip().startswith("{"):
            mem, cpus = _size(args[2])
        out.append(DeclaredVm(_literal(args[0]), _literal(args[1]), mem, cpus, path))
    seen = _seen | {os.path.realpath(path)}
    for fm in _FIXTURE_CALL.finditer(text):
        for root in roots or []:
            fx = os.path.join(root, fm.group(2) + ".fixture.lua")
            if os.path.isfile(fx):
                if os.path.realpath(fx) not in seen:  # a cycle is the fixture builder's error to report
                    out.extend(declared_vms(fx, roots, seen))
                break
    return out

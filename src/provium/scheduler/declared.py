"""A file's declared claim, read from its source before it runs.

`provium:claim{memory="4G", cpus=2}` written with literal values is found by a
scan of the text (like the fixture references), so a file that claims more than
the whole pool fails at dispatch, at once, instead of after it started; the
amount also goes into `file_discovered.declared_claim`.  Anything not literal
is left to the claim itself at run time.
"""

from __future__ import annotations

import re

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

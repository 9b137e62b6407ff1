"""How assertion failures show values: quoted and escaped, with a diff for text.

`t:assert_eq("hi\\n", "hi")` must not print a raw newline that hides which
side had it, so strings are shown quoted with escapes (`"hi\\n"`); when both
sides are multi-line strings a unified diff (Python's `difflib`) follows, so a
one-line change in a long output is found at a glance.  The leading wording
(`assert_eq failed: A ~= B`) stays the reference's, so matchers keep working.
The REPL prints strings the same way.
"""

from __future__ import annotations

import difflib

QUOTE_LIMIT = 2000  # bytes of one value shown in a message; the rest is counted
DIFF_LINES = 200  # lines of diff shown at most

_ESC = {0x5C: b"\\\\", 0x22: b'\\"', 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x00: b"\\0"}


def quote(data: bytes, limit: int = QUOTE_LIMIT) -> bytes:
    """`data` as a double-quoted, escaped one-line string.  Control bytes and
    invalid UTF-8 appear as `\\xNN`; valid UTF-8 text stays readable."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    cut = data[:limit]
    text = cut.decode("utf-8", "surrogateescape")
    out = bytearray(b'"')
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte
            out += b"\\x%02x" % (o - 0xDC00)
        elif o < 0x80:
            esc = _ESC.get(o)
            if esc is not None:
                out += esc
            elif o < 0x20 or o == 0x7F:
                out += b"\\x%02x" % o
            else:
                out.append(o)
        else:
            out += ch.encode("utf-8")
    out += b'"'
    if len(data) > limit:
        out += b"... (%d bytes in all)" % len(data)
    return bytes(out)


def diff(left: bytes, right: bytes, limit: int = DIFF_LINES) -> bytes:
    """A unified diff from `left` (the first argument) to `right`, or b"" unless
    both texts span several lines."""
    if b"\n" not in left.rstrip(b"\n") or b"\n" not in right.rstrip(b"\n"):
        return b""
    a = left.decode("utf-8", "replace").splitlines(keepends=True)
    b = right.decode("utf-8", "replace").splitlines(keepends=True)
    lines = []
    for line in difflib.unified_diff(a, b, "left (first argument)", "right (second argument)", n=2):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of text\n"
        lines.append(line)
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)\n"]
    return "".join(lines).rstrip("\n").encode("utf-8")

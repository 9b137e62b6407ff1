"""Values in assertion messages: quoting, escaping, bounds, and the diff."""

from provium.lua.failtext import diff, quote


def test_quote_escapes_what_would_hide():
    assert quote(b"hi\n") == b'"hi\\n"'
    assert quote(b'a"b\\c\t\r\x00\x1b') == b'"a\\"b\\\\c\\t\\r\\0\\x1b"'
    assert quote("héllo".encode()) == '"héllo"'.encode()  # valid UTF-8 stays readable
    assert quote(b"\xff\xfe") == b'"\\xff\\xfe"'
    assert quote(b"") == b'""'


def test_quote_is_bounded():
    q = quote(b"x" * 5000, limit=10)
    assert q == b'"xxxxxxxxxx"... (5000 bytes in all)'


def test_diff_only_for_multiline_texts():
    assert diff(b"a", b"b") == b""
    assert diff(b"a\nb\n", b"a") == b""
    d = diff(b"a\nb\nc\n", b"a\nB\nc\n").decode()
    assert d.splitlines() == ["--- left (first argument)", "+++ right (second argument)", "@@ -1,3 +1,3 @@",
                              " a", "-b", "+B", " c"]
    d = diff(b"a\nb", b"a\nc").decode()
    assert "\\ No newline at end of text" in d


def test_diff_is_bounded():
    a = "\n".join(str(i) for i in range(1000)).encode()
    b = "\n".join(str(i) if i % 3 else "changed" for i in range(1000)).encode()
    d = diff(a, b, limit=20).decode().splitlines()
    assert len(d) == 21 and d[-1].startswith("... (") and d[-1].endswith("more diff lines)")

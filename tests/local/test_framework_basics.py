"""The test framework: test(), the `t` context, outcomes, chunk errors, todo()."""

from test_lua_support import line_of, no_traceback, run_lua


CONTEXT = r'''
ran = {}
test("passes", function(t) t:assert(true); t:assert(1); t:assert("") end)
test("assert fails", function(t)
  t:assert(false, "boom at the door")
  ran.after_assert = true
end)
test("assert default", function(t) t:assert(nil) end)
test("eq shows values", function(t) t:assert_eq(1, 2) end)
test("eq custom", function(t) t:assert_eq("a", "b", "names differ") end)
test("eq ok", function(t) t:assert_eq(1, 1.0); t:assert_eq("x", "x") end)
test("neq", function(t) t:assert_neq(1, 2); t:assert_neq(3, 3) end)
test("contains", function(t)
  t:assert_contains("hello world", "o w")
  t:assert_contains("hello", "x.", "plain text, not a pattern")
end)
test("contains types", function(t) t:assert_contains("hello", 5) end)
test("raises ok", function(t)
  local e = t:assert_raises(function() error("inner") end)
  t:assert_contains(e, "inner")
  -- an assertion failing inside fn is the expected raise, not a failure
  t:assert_raises(function() t:assert(false, "expected") end)
end)
test("raises missing", function(t) t:assert_raises(function() end, "should throw") end)
test("fail default", function(t) t:fail() end)
test("fail custom", function(t) t:fail("gave up") end)
test("sticky", function(t)
  pcall(function() t:assert_eq(1, 2, "swallowed") end)
end)
test("sticky first wins", function(t)
  pcall(function() t:assert(false, "first") end)
  pcall(function() t:assert(false, "second") end)
end)
test("skip", function(t)
  t:log("before")
  t:skip("not on this host")
  ran.after_skip = true
end)
test("skip swallowed", function(t)
  pcall(function() t:skip("still a skip") end)
  t:fail("later failure does not win over skip")
end)
test("skip no reason", function(t) t:skip() end)
test("log", function(t)
  t:log("one")
  t:log(2)
  t:log("a", "b")
end)
test("name and meta", {area = "fs", tags = {"x"}}, function(t)
  t:assert_eq(t.name, "name and meta")
  t:assert_eq(t.meta.area, "fs")
  t:assert_eq(t.meta.tags[1], "x")
end)
test("meta defaults", function(t) t:assert_eq(next(t.meta), nil) end)
test("dot call", function(t) t.assert(true) end)
test("lua error", function(t) local x = nil; return x.field end)
test("error object", function(t) error({code = 1}) end)
test("nested test()", function(t) test("inner", function() end) end)
test("ran flags", function(t)
  t:assert_eq(ran.after_assert, nil)
  t:assert_eq(ran.after_skip, nil)
end)
'''


def test_context_methods_and_outcomes(tmp_path):
    r = run_lua(tmp_path, CONTEXT)
    assert r.outcome.chunk_error is None
    # declaration order is kept
    assert [t.name for t in r.outcome.tests][:4] == ["passes", "assert fails", "assert default", "eq shows values"]
    assert r.status("passes") == "passed"
    assert r.status("assert fails") == "failed"
    assert r.message("assert fails") == f"{r.path}:{line_of(CONTEXT, 'boom at the door')}: boom at the door"
    assert r.message("assert default").endswith(": assertion failed")
    assert r.message("eq shows values").endswith("assert_eq failed: 1 ~= 2")
    assert r.message("eq custom").endswith('names differ: "a" ~= "b"')
    assert r.status("eq ok") == "passed"
    assert r.message("neq").endswith("assert_neq failed: 3 == 3")
    assert r.message("contains").endswith('plain text, not a pattern: "x." not found in: "hello"')
    assert "both arguments must be strings" in r.message("contains types")
    assert r.status("raises ok") == "passed"
    assert r.message("raises missing").endswith("should throw: expected to raise")
    assert r.message("fail default").endswith("explicit failure (t:fail)")
    assert r.message("fail custom").endswith("gave up")
    # a failure swallowed by pcall still fails the test, first failure wins
    assert r.status("sticky") == "failed" and r.message("sticky").endswith("swallowed: 1 ~= 2")
    assert r.message("sticky first wins").endswith("first")
    # skip: reason kept, the rest of the body not run
    assert r.status("skip") == "skipped" and r.message("skip") == "not on this host"
    assert r.test("skip").log == ["before"]
    assert r.status("skip swallowed") == "skipped" and r.message("skip swallowed") == "still a skip"
    assert r.status("skip no reason") == "skipped"
    assert r.status("log") == "passed"
    assert r.test("log").log == ["one", "2", "a\tb"]
    assert r.status("name and meta") == "passed"
    assert r.test("name and meta").meta == {"area": "fs", "tags": ["x"]}
    assert r.status("meta defaults") == "passed"
    assert "call it with a colon" in r.message("dot call")
    assert r.message("lua error").startswith(f"{r.path}:{line_of(CONTEXT, 'x.field')}: attempt to index a nil value")
    assert r.message("error object") == "(error object is a table value)"
    assert "cannot declare test `inner` inside the running test" in r.message("nested test()")
    assert r.status("ran flags") == "passed"
    for t in r.outcome.tests:
        assert no_traceback(t.message), t.message
    p, f, s = r.outcome.summary()
    assert (p, f, s) == (7, 16, 3)
    assert not r.outcome.all_succeeded()


def test_events_for_run_and_skipped_tests(tmp_path):
    r = run_lua(tmp_path, '''
        test("a", function(t) end)
        test("b", function(t) t:skip("why") end)
        test("c", function(t) error("no") end)
        test("d", {skip = true}, function(t) end)
    ''')
    kinds = [(e.KIND, e.name) for e in r.events]
    assert kinds == [("test_started", "a"), ("test_passed", "a"),
                     ("test_started", "b"), ("test_skipped", "b"),
                     ("test_started", "c"), ("test_failed", "c"),
                     ("test_skipped", "d")]
    failed = r.kinds("test_failed")[0]
    assert failed.reason.endswith("no") and failed.path == r.path and failed.duration_ns > 0
    assert r.kinds("test_skipped")[0].reason == "why"


def test_syntax_error_is_a_chunk_error(tmp_path):
    r = run_lua(tmp_path, 'test("a", function(t)\n  local x = = 1\nend)\n')
    assert r.outcome.tests == []
    assert r.outcome.chunk_error.startswith(f"{r.path}:2:")
    assert "unexpected symbol" in r.outcome.chunk_error
    assert r.events == []


def test_error_at_file_scope_is_a_chunk_error(tmp_path):
    r = run_lua(tmp_path, 'test("a", function(t) end)\nerror("setup broke")\n')
    assert r.outcome.tests == []
    assert r.outcome.chunk_error == f"{r.path}:2: setup broke"


def test_unreadable_file_is_a_chunk_error(tmp_path):
    from provium.runner.file_runner import run_file
    from provium.runner.settings import RunSettings

    out = run_file(str(tmp_path / "missing.test.lua"), RunSettings(vmm="local"))
    assert out.chunk_error.startswith("read `") and "No such file" in out.chunk_error


def test_duplicate_and_bad_test_declarations(tmp_path):
    r = run_lua(tmp_path, 'test("a", function() end)\ntest("a", function() end)\n')
    assert r.outcome.chunk_error == f"{r.path}:2: test: duplicate name `a` in this file"
    r = run_lua(tmp_path, 'test("a", 5)\n')
    assert "test(name, [meta,] fn): bad arguments" in r.outcome.chunk_error
    r = run_lua(tmp_path, 'test(7, function() end)\n')
    assert "name must be a string, got number" in r.outcome.chunk_error


def test_todo_skips_every_test_without_running_it(tmp_path):
    r = run_lua(tmp_path, '''
        todo("waiting for the kernel fix")
        test("a", function(t) error("must not run") end)
        test("b", {skip = false}, function(t) error("must not run") end)
    ''')
    assert [(t.status, t.message) for t in r.outcome.tests] == [
        ("skipped", "waiting for the kernel fix"), ("skipped", "waiting for the kernel fix")]
    assert [e.KIND for e in r.events] == ["test_skipped", "test_skipped"]
    r = run_lua(tmp_path, 'test("a", function(t) error("x") end)\ntodo()\n')
    assert r.outcome.tests[0].message == "todo"


def test_no_test_is_a_passing_empty_file(tmp_path):
    r = run_lua(tmp_path, "local x = 1\n")
    assert r.outcome.chunk_error is None and r.outcome.tests == [] and r.outcome.all_succeeded()


QUOTED = '''
test("string eq", function(t) t:assert_eq("hi\\n", "hi") end)
test("multi-line eq", function(t) t:assert_eq("a\\nb\\nc\\n", "a\\nB\\nc\\n") end)
test("mixed", function(t) t:assert_eq("1", 1) end)
test("neq quoted", function(t) t:assert_neq("x y", "x y", "same") end)
test("binary", function(t) t:assert_eq("\\0\\255", "") end)
'''


def test_assertion_messages_quote_and_diff(tmp_path):
    r = run_lua(tmp_path, QUOTED)
    assert r.message("string eq").endswith('assert_eq failed: "hi\\n" ~= "hi"')
    msg = r.message("multi-line eq")
    first, *rest = msg.split("\n")
    assert first.endswith('assert_eq failed: "a\\nb\\nc\\n" ~= "a\\nB\\nc\\n"')
    assert rest == ["--- left (first argument)", "+++ right (second argument)", "@@ -1,3 +1,3 @@",
                    " a", "-b", "+B", " c"]
    assert r.message("mixed").endswith('assert_eq failed: "1" ~= 1')
    assert r.message("neq quoted").endswith('same: "x y" == "x y"')
    assert r.message("binary").endswith('assert_eq failed: "\\0\\xff" ~= ""')

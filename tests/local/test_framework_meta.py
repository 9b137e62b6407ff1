"""Meta tables on tests: filtering inside a real run, and meta in events/outcomes."""

from test_lua_support import run_lua

SOURCE = '''
test("plain", function(t) end)
test("three args", {spec = "PSD 4.2", custom = {1, 2}, owner = "fs"}, function(t) end)
test("slow one", {slow = true}, function(t) end)
test("skipped", {skip = "known bug"}, function(t) error("must not run") end)
test("net", {tags = {"net", "smoke"}}, function(t) end)
test("flaky", {tags = "flaky", area = "fs"}, function(t) end)
test("empty meta", {}, function(t) end)
'''


def test_default_filters(tmp_path):
    r = run_lua(tmp_path, SOURCE)
    st = {t.name: (t.status, t.message) for t in r.outcome.tests}
    assert st["plain"] == ("passed", None)
    assert st["three args"] == ("passed", None)
    assert st["slow one"] == ("skipped", "filtered: slow tests skipped (pass --include-slow)")
    assert st["skipped"] == ("skipped", "skipped: known bug")
    assert st["empty meta"] == ("passed", None)
    # filtered tests: one test_skipped, no test_started
    started = {e.name for e in r.kinds("test_started")}
    assert "slow one" not in started and "skipped" not in started
    # every key reaches the events and the outcome, whatever its type
    ev = next(e for e in r.kinds("test_started") if e.name == "three args")
    assert ev.meta == {"custom": [1, 2], "owner": "fs", "spec": "PSD 4.2"}
    assert r.test("three args").meta == ev.meta


def test_tag_filters_in_a_run(tmp_path):
    r = run_lua(tmp_path, SOURCE, include_slow=True, tags=["smoke", "flaky"], no_tags=["flaky"])
    st = {t.name: (t.status, t.message) for t in r.outcome.tests}
    assert st["net"] == ("passed", None)
    assert st["flaky"] == ("skipped", 'filtered: matched --no-tag (["flaky"])')
    assert st["plain"] == ("skipped", 'filtered: did not match --tag (["smoke", "flaky"])')
    assert st["slow one"][1] == 'filtered: did not match --tag (["smoke", "flaky"])'


def test_tag_meta_filters_in_a_run(tmp_path):
    r = run_lua(tmp_path, SOURCE, tag_meta={"owner": ["fs", "net"]})
    st = {t.name: (t.status, t.message) for t in r.outcome.tests}
    assert st["three args"] == ("passed", None)
    assert st["plain"] == ("skipped", "filtered: did not match any --tag-meta owner=…")
    r = run_lua(tmp_path, SOURCE, no_tag_meta={"area": ["fs"]})
    assert r.status("flaky") == "skipped" and r.message("flaky") == "filtered: matched --no-tag-meta (area=fs)"
    assert r.status("plain") == "passed"

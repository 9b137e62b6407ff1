"""Which tests run: meta.skip/slow and the tag filters, with their exact reasons."""

from provium.runner.filters import skip_reason, tags_of
from provium.runner.settings import RunSettings, SettingsError

import pytest


def s(**kw):
    return RunSettings(vmm="local", **kw)


@pytest.mark.parametrize("meta, reason", [
    ({}, None),
    ({"skip": True}, "skipped (meta.skip)"),
    ({"skip": 2}, "skipped (meta.skip)"),
    ({"skip": "flaky on arm"}, "skipped: flaky on arm"),
    ({"skip": ""}, "skipped: "),
    ({"skip": False}, None),
    ({"skip": 0}, None),
    ({"skip": 1.0}, None),
    ({"skip": ["x"]}, None),
    ({"slow": True}, "filtered: slow tests skipped (pass --include-slow)"),
    ({"slow": 1}, "filtered: slow tests skipped (pass --include-slow)"),
    ({"slow": "true"}, None),
    ({"slow": 1.0}, None),
    ({"slow": True, "skip": "first"}, "skipped: first"),
])
def test_skip_and_slow(meta, reason):
    assert skip_reason(meta, s()) == reason


def test_include_slow_runs_slow_tests_but_not_skipped_ones():
    assert skip_reason({"slow": True}, s(include_slow=True)) is None
    assert skip_reason({"slow": True, "skip": True}, s(include_slow=True)) == "skipped (meta.skip)"


def test_tags_forms():
    assert tags_of({"tags": "net"}) == ["net"]
    assert tags_of({"tags": ["net", 3, "dns"]}) == ["net", "dns"]
    assert tags_of({"tags": 5}) == []
    assert tags_of({}) == []


def test_tag_and_no_tag():
    tagged = {"tags": ["smoke", "net"]}
    assert skip_reason(tagged, s(tags=["smoke", "fast"])) is None
    assert skip_reason({"tags": ["slowpath"]}, s(tags=["smoke", "fast"])) == \
        'filtered: did not match --tag (["smoke", "fast"])'
    assert skip_reason({}, s(tags=["smoke"])) == 'filtered: did not match --tag (["smoke"])'
    # --no-tag is checked first and wins
    assert skip_reason(tagged, s(tags=["smoke"], no_tags=["net"])) == 'filtered: matched --no-tag (["net"])'
    assert skip_reason({"tags": "net"}, s(no_tags=["flaky"])) is None


def test_tag_meta_rules():
    meta = {"area": "fs", "subsystems": ["vfs", "ext4"], "flaky": True}
    assert skip_reason(meta, s(tag_meta={"area": ["fs"]})) is None
    assert skip_reason(meta, s(tag_meta={"subsystems": ["net", "ext4"]})) is None  # OR within a key
    assert skip_reason(meta, s(tag_meta={"area": ["fs"], "subsystems": ["net"]})) == \
        "filtered: did not match any --tag-meta subsystems=…"  # AND across keys
    assert skip_reason(meta, s(tag_meta={"missing": ["x"]})) == "filtered: did not match any --tag-meta missing=…"
    assert skip_reason(meta, s(no_tag_meta={"subsystems": ["ext4"]})) == \
        "filtered: matched --no-tag-meta (subsystems=ext4)"
    # booleans never match: {flaky = true} is not `flaky=true`
    assert skip_reason(meta, s(no_tag_meta={"flaky": ["true"]})) is None
    assert skip_reason({"flaky": "true"}, s(no_tag_meta={"flaky": ["true"]})) == \
        "filtered: matched --no-tag-meta (flaky=true)"
    # --no-tag-meta before --tag-meta
    assert skip_reason(meta, s(tag_meta={"area": ["net"]}, no_tag_meta={"area": ["fs"]})) == \
        "filtered: matched --no-tag-meta (area=fs)"


def test_settings_json_round_trip_and_errors():
    st = RunSettings(vmm="local", tags=["a"], tag_meta={"k": ["v", "w"]}, test_timeout=5.0, include_slow=True)
    assert RunSettings.from_json(st.to_json()) == st
    with pytest.raises(SettingsError, match="unknown key.*bogus.*valid:"):
        RunSettings.from_json('{"bogus": 1}')
    with pytest.raises(SettingsError, match="not valid JSON"):
        RunSettings.from_json("{")
    with pytest.raises(SettingsError, match="JSON object"):
        RunSettings.from_json("[]")

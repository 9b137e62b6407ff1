"""CI shards: a deterministic split, every file exactly once, balanced by durations."""

from __future__ import annotations

import json

import pytest

from provium.scheduler import shard

PATHS = [f"tests/f{i:02d}.test.lua" for i in range(17)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 20])
def test_the_shards_together_are_every_file_exactly_once(n):
    parts = [shard.select(PATHS, k, n) for k in range(1, n + 1)]
    assert sorted(p for part in parts for p in part) == sorted(PATHS)
    # and the split does not depend on who asks or in which order the paths come
    assert [shard.select(list(reversed(PATHS)), k, n) for k in range(1, n + 1)] == parts


def test_without_durations_the_split_is_even_by_count():
    sizes = [len(p) for p in shard.split(PATHS, 3)]
    assert max(sizes) - min(sizes) <= 1


def test_with_durations_the_shards_take_about_the_same_time():
    # very uneven files: a few long ones and many short ones
    secs = [60, 45, 30, 25, 20, 12, 10, 8, 6, 5, 4, 3, 2, 2, 1, 1, 1]
    durations = {p: s for p, s in zip(PATHS, secs)}
    parts = shard.split(PATHS, 3, durations)
    assert sorted(p for part in parts for p in part) == sorted(PATHS)
    loads = [sum(durations[p] for p in part) for part in parts]
    assert max(loads) <= 1.2 * min(loads), loads
    # a count-only split of the same suite is far off, which is why durations matter
    naive = [sum(durations[p] for p in part) for part in shard.split(PATHS, 3)]
    assert max(naive) > 1.2 * min(naive)


def test_unknown_files_weigh_the_mean_of_the_known_ones():
    durations = {PATHS[0]: 10.0, PATHS[1]: 30.0}
    parts = shard.split(PATHS[:4], 2, durations)  # unknown ones count 20 s each
    loads = sorted(sum(durations.get(p, 20.0) for p in part) for part in parts)
    assert loads == [40.0, 40.0]


@pytest.mark.parametrize("bad", ["", "3", "0/3", "4/3", "1/0", "a/b", "1/3/4", "-1/3"])
def test_bad_shard_values(bad):
    with pytest.raises(shard.ShardError, match="--shard: "):
        shard.parse_shard(bad)


def test_durations_file_round_trip_merges_and_ignores_junk(tmp_path):
    path = tmp_path / "d.json"
    assert shard.load_durations(path) == {}
    shard.save_durations(path, [("./a.test.lua", 1.5)])
    shard.save_durations(path, [("b.test.lua", 2.0)])
    assert shard.load_durations(path) == {"a.test.lua": 1.5, "b.test.lua": 2.0}
    assert json.loads(path.read_text())["version"] == 1
    path.write_text('{"files": {"a": -1, "b": "x", "c": 3}}')
    assert shard.load_durations(path) == {"c": 3.0}
    path.write_text("not json")
    assert shard.load_durations(path) == {}
    assert shard.part_path(path, 2, 3).name == "d.json.2-of-3"


def test_declared_claims_are_read_from_literal_source(tmp_path):
    from provium.events.types import ResourceAmount
    from provium.scheduler.declared import declared_claim

    cases = {
        'provium:claim({memory = "2G", cpus = 2})': ResourceAmount(2 << 30, 2),
        "provium:claim{cpus=1, memory=1048576}": ResourceAmount(1 << 20, 1),
        "-- provium:claim({memory = '9G'})\ntest('t', function() end)": None,
        "local m = '1G'; provium:claim({memory = m})": None,
        "test('t', function() end)": None,
    }
    for i, (src, want) in enumerate(cases.items()):
        p = tmp_path / f"{i}.test.lua"
        p.write_text(src)
        assert declared_claim(str(p)) == want, src

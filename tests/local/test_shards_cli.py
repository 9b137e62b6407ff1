"""`--shard K/N` and `--durations-file` through the CLI, on the local backend."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from test_cli import LOCAL, provium, text, write

# Uneven files: the runner's start-up is the same for all, the sleeps differ a lot.
SLEEPS = [2.0, 1.6, 1.2, 0.8, 0.5, 0.3, 0.2, 0.1, 0.0]


def test_shards_cover_every_file_once_and_balance_by_duration(tmp_path):
    names = []
    for i, s in enumerate(SLEEPS):
        name = f"f{i}.test.lua"
        write(tmp_path / "t" / name, f'test("t", function(t) _provium_sleep({s}) end)\n')
        names.append(f"t/{name}")
    dur = tmp_path / "durations.json"
    r = provium(*LOCAL, "--durations-file", str(dur), "t", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, text(r)
    known = json.loads(dur.read_text())["files"]
    assert sorted(known) == sorted(names)  # every run writes the durations file

    shards = []
    for k in (1, 2, 3):
        junit = tmp_path / f"junit-{k}.xml"
        r = provium(*LOCAL, "--json", "--shard", f"{k}/3", "--durations-file", str(dur), "--junit", str(junit),
                    "t", cwd=tmp_path, timeout=300)
        assert r.returncode == 0, text(r)
        ran = [json.loads(line)["path"] for line in r.stdout.decode().splitlines()]
        suites = [s.get("name") for s in ET.parse(junit).getroot().iter("testsuite")]
        assert sorted(suites) == sorted(ran)  # each shard's JUnit report has exactly its files
        shards.append(ran)
        assert (tmp_path / f"durations.json.{k}-of-3").exists()  # its part, not the shared file
    assert sorted(p for s in shards for p in s) == sorted(names)  # every file exactly once
    loads = [sum(known[p] for p in s) for s in shards]
    assert max(loads) <= 1.2 * min(loads), (shards, loads)
    # merged JUnit: the union of the shards' suites is the whole suite, no name twice
    merged = [s.get("name") for k in (1, 2, 3) for s in ET.parse(tmp_path / f"junit-{k}.xml").getroot().iter("testsuite")]
    assert sorted(merged) == sorted(names)


def test_a_bad_shard_is_a_usage_error(tmp_path):
    write(tmp_path / "t" / "a.test.lua", 'test("t", function(t) end)\n')
    r = provium(*LOCAL, "--shard", "0/2", "t", cwd=tmp_path)
    assert r.returncode == 2 and "--shard" in text(r) and "K must be between 1 and N" in text(r)


def test_more_shards_than_files_leaves_some_empty(tmp_path):
    write(tmp_path / "t" / "a.test.lua", 'test("t", function(t) end)\n')
    outs = [provium(*LOCAL, "--shard", f"{k}/3", "t", cwd=tmp_path) for k in (1, 2, 3)]
    assert all(o.returncode == 0 for o in outs)
    assert sum("PASS t/a.test.lua" in text(o) for o in outs) == 1

"""`provium prepare`: dynamic profiles' build commands and the built-in images."""

import pytest

from provium.config import ConfigError, load
from provium.image import ImageError, prepare


def _config(tmp_path, toml: str):
    (tmp_path / "provium.toml").write_text(toml)
    return load(tmp_path / "provium.toml", explicit=True)


def test_build_command_runs_with_out_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cfg = _config(tmp_path, f"""
[profiles.dyn]
build = "echo built > {{out}}/bzImage && pwd > {{out}}/cwd"
build_out = "{out}"
kernel = "{{out}}/bzImage"
cmdline = "console=ttyS0"
""")
    said = []
    prepare(cfg, "dyn", say=said.append)
    assert (out / "bzImage").read_text() == "built\n"
    assert (out / "cwd").read_text().strip() == str(tmp_path)  # provium's cwd
    assert said == [f"provium: building profile `dyn` → {out}"]
    assert cfg.profiles["dyn"].kernel == f"{out}/bzImage"


def test_failing_build_names_the_profile_and_exit_code(tmp_path):
    cfg = _config(tmp_path, f"""
[profiles.broken]
build = "exit 3"
build_out = "{tmp_path / 'o'}"
cmdline = "x"
""")
    with pytest.raises(ImageError, match=r"profile `broken`: build command failed \(exit code 3\)"):
        prepare(cfg, "broken", say=lambda s: None)


def test_all_profiles_in_name_order_stop_at_first_failure(tmp_path):
    log = tmp_path / "log"
    cfg = _config(tmp_path, f"""
[profiles.b]
build = "echo b >> {log}; exit 1"
build_out = "{tmp_path / 'b'}"
cmdline = "x"
[profiles.a]
build = "echo a >> {log}"
build_out = "{tmp_path / 'a'}"
cmdline = "x"
[profiles.c]
build = "echo c >> {log}"
build_out = "{tmp_path / 'c'}"
cmdline = "x"
""")
    cfg.profiles["linux"].builtin = False  # keep this test off the built-in image build
    with pytest.raises(ImageError, match="profile `b`"):
        prepare(cfg, say=lambda s: None)
    assert log.read_text().split() == ["a", "b"]


def test_from_dir_profiles_build_in_their_directory(tmp_path):
    d = tmp_path / "profiles" / "peios"
    d.mkdir(parents=True)
    (d / "profile.provium.toml").write_text(f"""
build = "pwd > {tmp_path}/where"
build_out = "{tmp_path / 'out'}"
cmdline = "x"
""")
    cfg = _config(tmp_path, '[profiles]\nfrom_dir = "profiles"\n')
    prepare(cfg, "peios", say=lambda s: None)
    assert (tmp_path / "where").read_text().strip() == str(d)


def test_unknown_profile(tmp_path):
    cfg = _config(tmp_path, "")
    with pytest.raises(ConfigError, match="provium prepare: profile `nope` not found"):
        prepare(cfg, "nope")


def test_profile_without_build_is_a_no_op(tmp_path):
    cfg = _config(tmp_path, '[profiles.static]\nkernel = "bz"\ncmdline = "x"\n')
    said = []
    prepare(cfg, "static", say=said.append)
    assert said == []

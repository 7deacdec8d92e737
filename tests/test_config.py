"""Tier 1/2: config loading: strict YAML, errors with file:line:col, drop-ins, merge, provenance,
permissions. Files are written below a tmp_path root and read through ``--root``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pmemd import cli
from pmemd.config import build, merge
from pmemd.engine import Target, load_config
from pmemd.model import RebootPolicy
from pmemd.sources import read_sources
from pmemd.units import GIB
from pmemd.yamldoc import ConfigErrors, Doc, load_yaml

ISSUE_LINE = re.compile(r"^(?P<file>/[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<key>[^:]+): (?P<msg>.+)$")


def tree(tmp_path: Path, files: dict[str, str], mode: int = 0o644) -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    for path, text in files.items():
        f = root / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        os.chmod(f, mode)
    return root


def load(root: Path) -> Any:
    return load_config(Target.make(str(root)))


def errors(root: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        load(root)
    return [str(i) for i in exc.value.issues]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


GOOD = """\
version: 1
settings:
  reboot: never
namespaces:
  fast:
    size: 1G
    offset: 5G
    filesystem: {type: ext4, label: fast}
    mount: {path: /pmem/fast, options: [noatime]}
"""

# --- strict YAML and error format ------------------------------------------------------------


def test_good_config_loads(tmp_path: Path) -> None:
    loaded = load(tree(tmp_path, {"/etc/pmem.yaml": GOOD}))
    ns = loaded.config.namespaces["fast"]
    assert (ns.size, ns.offset, ns.mount.options) == (GIB, 5 * GIB, ("noatime",))
    assert loaded.config.settings.reboot is RebootPolicy.NEVER
    assert str(loaded.origin("namespaces", "fast", "size")) == "/etc/pmem.yaml:6:11"


def test_a_key_left_at_its_default_is_located_at_its_nearest_parent(tmp_path: Path) -> None:
    """An issue about e.g. an `offset: auto` nobody wrote still points at a line in a file."""
    loaded = load(tree(tmp_path, {"/etc/pmem.yaml": GOOD.replace("    offset: 5G\n", "")}))
    assert loaded.config.namespaces["fast"].offset == "auto"
    assert str(loaded.origin("namespaces", "fast", "offset")) == str(loaded.origin("namespaces", "fast"))
    assert str(loaded.origin("namespaces", "fast")).startswith("/etc/pmem.yaml:5:")
    assert loaded.origin("settings", "kaslr") is not None


def test_xfs_below_300_mib_is_refused_with_what_to_change(tmp_path: Path) -> None:
    (err,) = errors(tree(tmp_path, {"/etc/pmem.yaml": "version: 1\nnamespaces:\n  small:\n    size: 256M\n"
                                                      "    filesystem: {type: xfs}\n"}))
    assert err.startswith("/etc/pmem.yaml:3:3: namespaces.small: ")
    assert "xfs needs at least 300 MiB" in err and "use size: 384M or more, or filesystem type ext4" in err


def test_duplicate_keys_error_with_both_lines(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\nnamespaces:\n  fast:\n    size: 1G\n    size: 2G\n"
                                             "  fast:\n    size: 3G\n"})
    errs = errors(root)
    assert errs == [
        "/etc/pmem.yaml:5:5: namespaces.fast.size: duplicate key (first set at line 4); remove one of them",
        "/etc/pmem.yaml:6:3: namespaces.fast: duplicate key (first set at line 3); remove one of them",
    ]


@pytest.mark.parametrize(("yaml_text", "key", "fragment"), [
    ("settings:\n  reboot: on\n", "settings.reboot", "'on' is not allowed"),
    ("settings:\n  reboot: yes\n", "settings.reboot", "'yes' is not allowed"),
    ("settings:\n  kaslr: off\n", "settings.kaslr", "'off' is not allowed"),
    ("settings:\n  min_free_ram: 0755\n", "settings.min_free_ram", "leading zero"),
    ("namespaces:\n  a:\n    size: 010G\n", "namespaces.a.size", "octal (010G = 8G there); write 10G"),
    ("namespaces:\n  a:\n    size: 1G\n    offset: 0755\n", "namespaces.a.offset", "leading zero"),
    ("namespaces:\n  a:\n    size: 4GB\n", "namespaces.a.size", "write 4G"),
    ("namespaces:\n  a:\n    size: yes\n", "namespaces.a.size", "not a size"),
    ("namespaces:\n  a:\n    size: 1G\n    on_foreign_data: yes\n", "namespaces.a.on_foreign_data",
     "'yes' is not allowed"),
])
def test_yaml11_booleans_and_octals_stay_strings_and_fail_validation(
        tmp_path: Path, yaml_text: str, key: str, fragment: str) -> None:
    """`on`, `yes`, `0755` are strings (YAML 1.2 core), so the model says what is wrong with them."""
    errs = errors(tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n" + yaml_text}))
    assert len(errs) == 1, errs
    m = ISSUE_LINE.match(errs[0])
    assert m, errs[0]
    assert m["key"] == key and fragment in m["msg"], errs[0]


def test_strict_loader_keeps_on_yes_0755_as_strings() -> None:
    doc = load_yaml("/x.yaml", "a: on\nb: yes\nc: 0755\nd: true\ne: 0x10\nf: 12\ng: ~\nh: 1.5\ni: 12:30\n")
    assert doc.data == {"a": "on", "b": "yes", "c": "0755", "d": True, "e": 16, "f": 12, "g": None,
                        "h": 1.5, "i": "12:30"}


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    errs = errors(tree(tmp_path, {"/etc/pmem.yaml": "version: 1\nnamespaces:\n  a:\n    size: 1G\n"
                                                    "    filesytem: {type: ext4}\n"}))
    assert errs == ["/etc/pmem.yaml:5:5: namespaces.a.filesytem: unknown key 'filesytem'; allowed here: "
                    "size, offset, mode, filesystem, mount, on_foreign_data"]


@pytest.mark.parametrize(("yaml_text", "allowed"), [
    ("setings: {}\n", "version, settings, namespaces"),
    ("settings: {reboots: never}\n",
     "reboot, reboot_window, bootloader, trial_boot, min_free_ram, kaslr, resync_interval"),
    ("namespaces:\n  a:\n    size: 1G\n    mount: {path: /p, opts: []}\n", "path, options"),
    ("namespaces:\n  a:\n    size: 1G\n    filesystem: {type: xfs, lable: x}\n", "type, label, options"),
])
def test_unknown_keys_everywhere(tmp_path: Path, yaml_text: str, allowed: str) -> None:
    (err,) = errors(tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n" + yaml_text}))
    assert err.endswith(f"allowed here: {allowed}"), err
    assert ISSUE_LINE.match(err), err


def test_every_error_is_file_line_col_keypath_message_and_all_are_reported(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": """\
version: 1
settings:
  reboot: sometimes
namespaces:
  one:
    size: 4GB
  two:
    size: 1G
    offset: 010G
  Bad_Name:
    size: 1G
"""})
    errs = errors(root)
    parsed = [ISSUE_LINE.match(e) for e in errs]
    assert all(parsed), errs
    got = {(m["line"], m["col"], m["key"]) for m in parsed if m}
    assert got == {("3", "11", "settings.reboot"), ("6", "11", "namespaces.one.size"),
                   ("9", "13", "namespaces.two.offset"), ("10", "3", "namespaces.Bad_Name")}


def test_two_bad_namespaces_in_two_files_give_two_errors(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\nnamespaces:\n  a:\n    size: 1.5G\n",
        "/etc/pmem.d/50-b.yaml": "namespaces:\n  b:\n    size: 1G\n    mode: fast\n",
    })
    errs = errors(root)
    assert len(errs) == 2, errs
    assert errs[0].startswith("/etc/pmem.yaml:4:11: namespaces.a.size: '1.5G': fractions are not allowed")
    assert errs[1].startswith("/etc/pmem.d/50-b.yaml:4:11: namespaces.b.mode: 'fast' is not allowed")


def test_yaml_syntax_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\nnamespaces:\n  a: {size: [1G\n",
        "/usr/lib/pmem.d/10-x.yaml": "namespaces:\n\t a: 1\n",
    })
    errs = errors(root)
    assert len(errs) == 2
    assert errs[0].startswith("/etc/pmem.yaml:") and "YAML syntax" in errs[0]
    assert errs[1].startswith("/usr/lib/pmem.d/10-x.yaml:2:") and "YAML syntax" in errs[1]


@pytest.mark.parametrize(("text", "fragment"), [
    ("version: 2\n", "version must be 1"),
    ("settings: {}\n", "required key 'version' is missing"),
    ("- version: 1\n", "the top level must be a map"),
    ("version: 1\nbase: &b {size: 1G}\nnamespaces:\n  a:\n    <<: *b\n", "merge keys (<<) are not supported"),
    ("version: 1\nnamespaces:\n  a: !!binary aGk=\n", "YAML tag '!!binary' is not supported"),
    ("version: 1\n1: x\n", "keys must be plain strings"),
])
def test_other_structural_errors(tmp_path: Path, text: str, fragment: str) -> None:
    errs = errors(tree(tmp_path, {"/etc/pmem.yaml": text}))
    assert any(fragment in e for e in errs), errs
    assert all(e.startswith("/etc/pmem.yaml:") for e in errs), errs


def test_missing_main_config_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (err,) = errors(tree(tmp_path, {"/usr/lib/pmem.d/10-x.yaml": "version: 1\n"}))
    assert err.startswith("/etc/pmem.yaml:1:1: the main config file is missing, so pmemd changes nothing")


# --- drop-ins: precedence, masking, merge order ----------------------------------------------


def ns_yaml(name: str, size: str = "1G", extra: str = "") -> str:
    return f"namespaces:\n  {name}:\n    size: {size}\n{extra}"


def test_etc_shadows_run_shadows_usr_lib_by_file_name(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n",
        "/usr/lib/pmem.d/50-x.yaml": ns_yaml("from-usr"),
        "/run/pmem.d/50-x.yaml": ns_yaml("from-run"),
        "/etc/pmem.d/50-x.yaml": ns_yaml("from-etc"),
        "/usr/lib/pmem.d/60-y.yaml": ns_yaml("y-usr"),
        "/run/pmem.d/60-y.yaml": ns_yaml("y-run"),
    })
    loaded = load(root)
    assert set(loaded.config.namespaces) == {"from-etc", "y-run"}
    d = loaded.discovery
    assert [s.path for s in d.sources] == ["/etc/pmem.yaml", "/etc/pmem.d/50-x.yaml", "/run/pmem.d/60-y.yaml"]
    assert set(d.shadowed) == {"/run/pmem.d/50-x.yaml", "/usr/lib/pmem.d/50-x.yaml", "/usr/lib/pmem.d/60-y.yaml"}
    assert d.sources[1].shadows == ("/run/pmem.d/50-x.yaml", "/usr/lib/pmem.d/50-x.yaml")


def test_empty_file_and_dev_null_symlink_mask(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n",
        "/usr/lib/pmem.d/50-x.yaml": ns_yaml("x"),
        "/usr/lib/pmem.d/60-y.yaml": ns_yaml("y"),
        "/usr/lib/pmem.d/70-z.yaml": ns_yaml("z"),
        "/etc/pmem.d/50-x.yaml": "",
    })
    (root / "run/pmem.d").mkdir(parents=True)
    (root / "run/pmem.d/60-y.yaml").symlink_to("/dev/null")
    loaded = load(root)
    assert set(loaded.config.namespaces) == {"z"}
    assert set(loaded.discovery.masked) == {"/etc/pmem.d/50-x.yaml", "/run/pmem.d/60-y.yaml"}


def test_masked_main_config_means_the_empty_config(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/usr/lib/pmem.d/50-x.yaml": "version: 1\n" + ns_yaml("x")})
    (root / "etc").mkdir()
    (root / "etc/pmem.yaml").symlink_to("/dev/null")
    loaded = load(root)
    assert loaded.discovery.masked == ("/etc/pmem.yaml",)
    assert set(loaded.config.namespaces) == {"x"}


def test_an_empty_main_config_is_an_error_not_no_namespaces(tmp_path: Path) -> None:
    """Empty (truncated, an editor mid-save), /etc/pmem.yaml would mean 'remove everything'."""
    root = tree(tmp_path, {"/etc/pmem.yaml": "", "/usr/lib/pmem.d/50-x.yaml": "version: 1\n" + ns_yaml("x")})
    (err,) = errors(root)
    assert err.startswith("/etc/pmem.yaml:1:1: is empty; pmemd does not take an empty main config as "
                          "'no namespaces'. Write `version: 1` and `namespaces: {}`")
    (root / "etc/pmem.yaml").write_text("  \n\n")
    assert len(errors(root)) == 1


def test_a_main_config_with_only_comments_names_the_file(tmp_path: Path) -> None:
    (err,) = errors(tree(tmp_path, {"/etc/pmem.yaml": "# nothing here yet\n"}))
    assert err == "/etc/pmem.yaml:1:1: version: required key 'version' is missing"


def test_an_empty_dropin_still_masks(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n", "/usr/lib/pmem.d/50-x.yaml": ns_yaml("x"),
                           "/etc/pmem.d/50-x.yaml": ""})
    assert load(root).config.namespaces == {}


def test_non_yaml_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n",
        "/etc/pmem.d/50-x.yaml.dpkg-old": "garbage: [",
        "/etc/pmem.d/.50-x.yaml.swp": "garbage: [",
        "/etc/pmem.d/README": "garbage: [",
    })
    assert load(root).config.namespaces == {}


def test_merge_order_main_first_then_lexical_across_directories(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\nsettings:\n  reboot: never\n  min_free_ram: 1G\n",
        "/run/pmem.d/30-c.yaml": "settings:\n  reboot: now\n",
        "/usr/lib/pmem.d/10-a.yaml": "settings:\n  reboot: flag\n  min_free_ram: 2G\n",
        "/etc/pmem.d/20-b.yaml": "settings:\n  reboot: schedule\n",
    })
    loaded = load(root)
    assert [s.path for s in loaded.discovery.sources] == [
        "/etc/pmem.yaml", "/usr/lib/pmem.d/10-a.yaml", "/etc/pmem.d/20-b.yaml", "/run/pmem.d/30-c.yaml"]
    assert loaded.config.settings.reboot is RebootPolicy.NOW
    assert loaded.config.settings.min_free_ram == 2 * GIB
    origin = loaded.merged.origins[("settings", "reboot")]
    assert str(origin.loc) == "/run/pmem.d/30-c.yaml:2:11"
    assert [str(o) for o in origin.overrides] == [
        "/etc/pmem.yaml:3:11", "/usr/lib/pmem.d/10-a.yaml:2:11", "/etc/pmem.d/20-b.yaml:2:11"]


def test_maps_merge_and_scalars_and_lists_override(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": GOOD,
        "/usr/lib/pmem.d/50-pkg.yaml": "namespaces:\n  fast:\n    mount: {options: [nodev, nosuid]}\n"
                                       "  other:\n    size: 256M\n",
        "/etc/pmem.d/60-local.yaml": "namespaces:\n  fast:\n    filesystem: {label: quick}\n",
    })
    cfg = load(root).config
    fast = cfg.namespaces["fast"]
    assert fast.filesystem is not None and fast.mount is not None
    assert (fast.filesystem.type.value, fast.filesystem.label) == ("ext4", "quick")  # map merged
    assert fast.mount.path == "/pmem/fast"  # kept from /etc/pmem.yaml
    assert fast.mount.options == ("nodev", "nosuid")  # a list is replaced, not appended
    assert set(cfg.namespaces) == {"fast", "other"}


def test_config_json_shows_file_line_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": GOOD,
        "/usr/lib/pmem.d/50-pkg.yaml": "settings:\n  reboot: flag\nnamespaces:\n  fast:\n    filesystem:\n"
                                       "      label: pkg\n",
        "/etc/pmem.d/50-pkg.yaml.disabled": "",
    })
    rc, out, err = run_cli(capsys, "--root", str(root), "config", "--json")
    assert rc == 0, err
    j = json.loads(out)
    assert j["files"] == ["/etc/pmem.yaml", "/usr/lib/pmem.d/50-pkg.yaml"]
    values = {v["key"]: v for v in j["values"]}
    assert values["settings.reboot"] == {"key": "settings.reboot", "value": "flag",
                                         "file": "/usr/lib/pmem.d/50-pkg.yaml", "line": 2,
                                         "overrides": ["/etc/pmem.yaml:3:11"]}
    assert values["namespaces.fast.filesystem.label"]["overrides"] == ["/etc/pmem.yaml:8:37"]
    assert values["namespaces.fast.size"] == {"key": "namespaces.fast.size", "value": GIB,
                                              "file": "/etc/pmem.yaml", "line": 6, "overrides": []}
    assert values["settings.kaslr"]["file"] is None  # a default
    assert j["config"]["namespaces"]["fast"]["filesystem"]["label"] == "pkg"
    # and the text form says the same
    rc, out, _ = run_cli(capsys, "--root", str(root), "config")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("settings.reboot:"))
    assert line.endswith("# /usr/lib/pmem.d/50-pkg.yaml:2 (overrides /etc/pmem.yaml:3:11)")


@pytest.mark.parametrize("key", ["size", "offset"])
def test_conflicting_size_or_offset_between_files_is_an_error_naming_both(tmp_path: Path, key: str) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\nnamespaces:\n  fast:\n    size: 1G\n    offset: 5G\n",
        "/usr/lib/pmem.d/50-pkg.yaml": f"namespaces:\n  fast:\n    {key}: 2G\n",
    })
    (err,) = errors(root)
    assert err.startswith(f"/usr/lib/pmem.d/50-pkg.yaml:3:{7 + len(key)}: namespaces.fast.{key}: conflicts with "
                          f"/etc/pmem.yaml:")
    assert "pmemd does not pick one" in err


def test_conflicting_size_between_two_dropins(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n",
        "/usr/lib/pmem.d/50-a.yaml": ns_yaml("fast", "1G"),
        "/run/pmem.d/60-b.yaml": ns_yaml("fast", "2G"),
    })
    (err,) = errors(root)
    assert err.startswith("/run/pmem.d/60-b.yaml:3:11: namespaces.fast.size: conflicts with "
                          "/usr/lib/pmem.d/50-a.yaml:3:11")
    assert "shadow /usr/lib/pmem.d/50-a.yaml with a file of the same name in /etc/pmem.d" in err


def test_same_size_in_two_files_is_not_a_conflict(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n" + ns_yaml("fast", "1G"),
        "/usr/lib/pmem.d/50-a.yaml": ns_yaml("fast", "1G"),
    })
    assert load(root).config.namespaces["fast"].size == GIB


def test_same_size_spelled_differently_is_not_a_conflict(tmp_path: Path) -> None:
    """1G, 1024M and 1073741824 are the same reservation: nothing for pmemd to pick."""
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n" + ns_yaml("fast", "1G", "    offset: 0x140000000\n"),
        "/usr/lib/pmem.d/50-a.yaml": ns_yaml("fast", "1024M", "    offset: 5G\n"),
        "/usr/lib/pmem.d/60-b.yaml": ns_yaml("fast", "1073741824"),
    })
    ns = load(root).config.namespaces["fast"]
    assert (ns.size, ns.offset) == (GIB, 5 * GIB)


def test_a_dropin_may_change_size_if_it_shadows_the_file_that_set_it(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n",
        "/usr/lib/pmem.d/50-a.yaml": ns_yaml("fast", "1G"),
        "/etc/pmem.d/50-a.yaml": ns_yaml("fast", "2G"),
    })
    assert load(root).config.namespaces["fast"].size == 2 * GIB


def test_conflict_with_main_config_does_not_suggest_shadowing_it(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "/etc/pmem.yaml": "version: 1\n" + ns_yaml("fast", "1G"),
        "/usr/lib/pmem.d/50-a.yaml": ns_yaml("fast", "2G"),
    })
    (err,) = errors(root)
    assert "shadow /etc/pmem.yaml" not in err  # /etc/pmem.yaml cannot be shadowed


# --- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/pmem.yaml", "/usr/lib/pmem.d/50-x.yaml", "/etc/pmem.d/50-x.yaml"])
def test_group_writable_file_is_refused(tmp_path: Path, path: str) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n", path: "version: 1\n"})
    os.chmod(root / path.lstrip("/"), 0o664)
    (err,) = errors(root)
    assert err == f"{path}:1:1: refused: writable by group or others (mode 0664); run: chmod go-w {path}"


def test_world_writable_file_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n"})
    os.chmod(root / "etc/pmem.yaml", 0o646)  # noqa: S103 (the point of the test)
    (err,) = errors(root)
    assert "writable by group or others (mode 0646)" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_non_root_owned_file_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n", "/run/pmem.d/10-x.yaml": ns_yaml("x")})
    os.chown(root / "run/pmem.d/10-x.yaml", 65534, 65534)
    (err,) = errors(root)
    assert err == ("/run/pmem.d/10-x.yaml:1:1: refused: owned by uid 65534, not root; "
                   "run: chown root: /run/pmem.d/10-x.yaml")


def test_world_readable_is_fine(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n"}, mode=0o644)
    assert load(root).config.version == 1
    os.chmod(root / "etc/pmem.yaml", 0o600)
    assert load(root).config.version == 1


def test_all_refused_files_are_reported(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/etc/pmem.yaml": "version: 1\n", "/etc/pmem.d/1.yaml": "{}\n",
                           "/etc/pmem.d/2.yaml": "{}\n"})
    os.chmod(root / "etc/pmem.d/1.yaml", 0o666)  # noqa: S103 (the point of the test)
    os.chmod(root / "etc/pmem.d/2.yaml", 0o620)
    assert len(errors(root)) == 2


def test_config_outside_the_root_is_permission_checked_too(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/usr/lib/pmem.d/50-x.yaml": ns_yaml("x")})
    main = tmp_path / "my.yaml"
    main.write_text("version: 1\n")
    os.chmod(main, 0o644)
    loaded = load_config(Target.make(str(root), str(main)))
    assert [s.path for s in loaded.discovery.sources] == [str(main), "/usr/lib/pmem.d/50-x.yaml"]
    os.chmod(main, 0o664)
    with pytest.raises(ConfigErrors, match="refused: writable by group"):
        load_config(Target.make(str(root), str(main)))


def test_read_sources_of_an_empty_root(tmp_path: Path) -> None:
    from pmemd.fsroot import Root

    d = read_sources(Root(tmp_path))
    assert (d.sources, d.masked, d.shadowed, d.main_present) == ((), (), (), False)
    assert build(d).config.namespaces == {}


# --- merge properties ------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "size", "offset"])
scalars = st.one_of(st.integers(min_value=0, max_value=10**6), st.booleans(), st.none(),
                    st.text(alphabet="xyz-", min_size=1, max_size=4))
trees = st.recursive(scalars, lambda children: st.dictionaries(keys, children, max_size=3), max_leaves=8)
docs = st.dictionaries(st.sampled_from(["settings", "other", "x"]), trees, max_size=3)


def as_doc(path: str, data: dict[str, Any]) -> tuple[str, Doc]:
    return path, load_yaml(path, yaml.safe_dump(data, default_flow_style=False))


def reference_merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = reference_merge(a[k], v) if k in a else v
        return out
    return b


def leaves(data: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(data, dict) and data:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in data.items():
            out.update(leaves(v, (*path, k)))
        return out
    return {path: data}


@given(docs)
def test_merging_a_doc_with_itself_is_the_doc(data: dict[str, Any]) -> None:
    m = merge([as_doc("/a.yaml", data), as_doc("/b.yaml", data)])
    assert m.data == data
    for path, value in leaves(data).items():
        if path and value != {}:  # an empty map merged into an empty map keeps its first origin
            assert m.origins[path].loc.file == "/b.yaml"
            assert [o.file for o in m.origins[path].overrides] == ["/a.yaml"]


@given(docs, docs)
def test_merge_is_a_recursive_map_merge_where_the_later_scalar_wins(a: dict[str, Any], b: dict[str, Any]) -> None:
    m = merge([as_doc("/a.yaml", a), as_doc("/b.yaml", b)])
    assert m.data == reference_merge(a, b)
    b_leaves = leaves(b)
    for path, value in leaves(m.data).items():
        if not path:
            continue
        origin = m.origins[path]
        if value == {}:
            assert origin.loc.file in ("/a.yaml", "/b.yaml")
        elif path in b_leaves:
            assert origin.loc.file == "/b.yaml" and value == b_leaves[path]
        else:
            assert origin.loc.file == "/a.yaml"


@given(st.sampled_from(["1G", "2G", "1024M", "5G"]), st.sampled_from(["1G", "2G", "1024M", "5G"]),
       st.sampled_from(["size", "offset"]))
def test_destructive_keys_conflict_exactly_when_the_values_differ(x: str, y: str, key: str) -> None:
    from pmemd.units import parse_size

    a = as_doc("/etc/pmem.yaml", {"namespaces": {"n": {key: x}}})
    b = as_doc("/usr/lib/pmem.d/b.yaml", {"namespaces": {"n": {key: y}}})
    if parse_size(x) == parse_size(y):
        assert merge([a, b]).data["namespaces"]["n"][key] == y
    else:
        with pytest.raises(ConfigErrors, match=r"conflicts with /etc/pmem\.yaml"):
            merge([a, b])


# --- robustness: any YAML gives a config or ConfigErrors, never a traceback ---------------------

_KEYS = ["version", "settings", "namespaces", "reboot", "reboot_window", "bootloader", "min_free_ram", "kaslr",
         "resync_interval", "size", "offset", "mode", "filesystem", "mount", "type", "label", "options", "path",
         "on_foreign_data", "fast", "x"]
_VALUES = st.one_of(st.integers(-5, 2**64), st.booleans(), st.none(), st.floats(allow_nan=True),
                    st.sampled_from(["1G", "4GB", "010G", "auto", "on", "ext4", "xfs", "/pmem/x", "fsdax", "",
                                     "0x", "never", "Sun 03:00", "5m", "-1", "1.5G", "dax", "-F", "noatime"]),
                    st.text(max_size=5))
_YAML_DATA = st.recursive(_VALUES, lambda c: st.one_of(st.lists(c, max_size=3),
                                                       st.dictionaries(st.sampled_from(_KEYS), c, max_size=4)),
                          max_leaves=12)


@given(st.dictionaries(st.sampled_from(_KEYS), _YAML_DATA, max_size=4), st.booleans())
def test_any_document_loads_or_gives_config_errors(data: dict[str, Any], with_version: bool) -> None:
    from pmemd.config import Discovery, Source

    if with_version:
        data = {"version": 1, **data}
    text = yaml.safe_dump(data)
    discovery = Discovery((Source("/etc/pmem.yaml", text),), (), (), True)
    try:
        build(discovery)
    except ConfigErrors as exc:
        assert exc.issues
        for issue in exc.issues:
            assert str(issue).startswith("/etc/pmem.yaml:"), str(issue)
            assert "\n" not in str(issue)


@given(st.text(max_size=80))
def test_any_text_loads_or_gives_config_errors(text: str) -> None:
    from pmemd.config import Discovery, Source

    try:
        build(Discovery((Source("/etc/pmem.yaml", text),), (), (), True))
    except ConfigErrors as exc:
        assert all(str(i).startswith("/etc/pmem.yaml:") for i in exc.issues)


@pytest.mark.parametrize(("fs", "option", "why"), [
    ("ext4", "-F", "pmemd never forces mkfs"),
    ("xfs", "-f", "pmemd never forces mkfs"),
    ("ext4", "-U", "pmemd chooses and records the filesystem UUID itself"),
    ("xfs", "crc=1,uuid=0f0c2a57-0000-4000-8000-000000000001", "pmemd chooses and records the filesystem UUID"),
    ("ext4", "-O", None),  # allowed: a feature list follows as its own item
    ("xfs", "reflink=1", "xfs DAX needs reflink=0"),
    ("ext4", "inline_data", "ext4 refuses DAX with inline_data"),
])
def test_mkfs_options_pmemd_must_own_or_that_break_dax_are_refused(tmp_path: Path, fs: str, option: str,
                                                                   why: str | None) -> None:
    text = ("version: 1\nnamespaces:\n  a:\n    size: 1G\n"
            f"    filesystem: {{type: {fs}, options: [{json.dumps(option)}]}}\n")
    root = tree(tmp_path, {"/etc/pmem.yaml": text})
    if why is None:
        assert load(root).config.namespaces["a"].filesystem.options == (option,)
    else:
        (err,) = errors(root)
        assert why in err and err.startswith("/etc/pmem.yaml:5:"), err

"""Tier 2: the command line on host trees, in a subprocess (``python -m pmemd``) and in-process
(``pmemd.cli.main``): exit codes 0/2/1, JSON shapes, one-line user errors without tracebacks.

Subprocess runs use the real SubprocessRunner, so they only get trees where pmemd has nothing to
start (no pmem block device nodes to probe); in-process runs swap in the RecordingRunner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import GIB, QEMU_PC_16G, REPO, FakeDevices, HostTree, RecordingRunner, copy_fixture

from pmemd import cli
from pmemd.bootloader.grub import render_dropin
from pmemd.state import Owned, OwnedFs, OwnedNamespace, dumps

EXAMPLE = str(REPO / "examples/pmem.yaml")
TOKENS = ("memmap=512M!4G", "memmap=1G!5G", "nokaslr")


def pmemd(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "LC_ALL": "C"}
    return subprocess.run([sys.executable, "-m", "pmemd", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd or REPO, timeout=60, check=False)


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def plain(tmp_path: Path) -> HostTree:
    return copy_fixture("debian13-qemu-plain", tmp_path / "host")


def converged(tmp_path: Path) -> HostTree:
    """A Debian host where pmemd's work is done: arguments in effect, pmem0 formatted by pmemd
    and mounted with DAX, the state file saying so."""
    t = HostTree(tmp_path / "conv")
    t.firmware_map(QEMU_PC_16G).kernel("6.12.117+deb13-amd64").boot_id("b-2").debian_grub()
    t.pmemd_dropin(("memmap=1G!5G", "nokaslr"))
    t.cmdline("BOOT_IMAGE=/boot/vmlinuz root=UUID=x ro memmap=1G!5G nokaslr quiet")
    t.nd_region(0, 5 * GIB, GIB, dev_node=False)
    t.mount("/dev/pmem0", "/pmem/fast", "ext4", "rw,dax=always")
    t.p("/pmem/fast").mkdir(parents=True)
    t.config("version: 1\nsettings: {kaslr: auto}\nnamespaces:\n  fast:\n    size: 1G\n    offset: 5G\n"
             "    filesystem: {type: ext4, label: fast}\n    mount: {path: /pmem/fast}\n")
    owned = Owned(kernel_args=("memmap=1G!5G", "nokaslr"), backend="grub", namespaces={
        "fast": OwnedNamespace(5 * GIB, GIB, OwnedFs("u-1", "ext4", "fast"), "/pmem/fast")})
    t.write("/var/lib/pmemd/state.json", dumps(owned))
    return t


# --- plan ----------------------------------------------------------------------------------------


def test_plan_in_a_subprocess_exit_2_when_changes_are_pending(plain: HostTree) -> None:
    r = pmemd("--root", str(plain.path), "--config", EXAMPLE, "plan")
    assert r.returncode == 2, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == "boot loader: grub (/etc/default/grub and /boot/grub/grub.cfg (Debian/Ubuntu GRUB))"
    assert "actions (2):" in lines
    assert "  1. [needs-reboot] boot config (grub): add memmap=512M!4G memmap=1G!5G nokaslr" in lines
    assert any(ln.startswith("  - fast: mkfs.ext4 -q -b 4096 -L fast /dev/pmemN") for ln in lines)


def test_plan_json_shape(plain: HostTree) -> None:
    r = pmemd("--root", str(plain.path), "--config", EXAMPLE, "plan", "--json")
    assert r.returncode == 2, r.stderr
    j = json.loads(r.stdout)
    assert j["format"] == 1
    assert set(j) == {"format", "in_sync", "bootloader", "desired_args", "next_boot_args", "running_args", "trial",
                      "reboot_needed", "actions", "after_reboot", "issues", "namespaces", "notes"}
    assert j["in_sync"] is False and j["reboot_needed"] is True
    assert j["bootloader"]["layout"] == "grub"
    assert j["desired_args"] == list(TOKENS)
    assert j["next_boot_args"][-2:] == ["console=ttyS0,115200", "quiet"]
    assert j["running_args"][0].startswith("BOOT_IMAGE=")
    a0, a1 = j["actions"]
    assert (a0["kind"], a0["label"], a0["add"]) == ("set-kernel-args", "needs-reboot", list(TOKENS))
    assert (a1["kind"], a1["label"]) == ("reboot", "needs-reboot")
    assert {n["name"]: (n["token"], n["start"], n["size"], n["running"]) for n in j["namespaces"]} == {
        "bulk": ("memmap=512M!4G", 4 * GIB, GIB // 2, "declared"), "fast": ("memmap=1G!5G", 5 * GIB, GIB, "declared")}
    assert j["issues"] == []


def test_converged_host_plans_nothing_exit_0(tmp_path: Path) -> None:
    t = converged(tmp_path)
    r = pmemd("--root", str(t.path), "plan")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "in sync: nothing to do"
    j = json.loads(pmemd("--root", str(t.path), "plan", "--json").stdout)
    assert j["in_sync"] is True and j["actions"] == [] and j["namespaces"][0]["running"] == "mounted"


def test_real_capture_with_the_dax_mount_in_place_is_in_sync(tmp_path: Path) -> None:
    """debian13-qemu-memmap: the guest booted memmap=1G!5G and mounted pmem0 on /pmem/fast with DAX.
    A config asking for exactly that plans nothing (exit 0); status shows it running."""
    t = copy_fixture("debian13-qemu-memmap", tmp_path / "host")
    t.config("version: 1\nsettings: {kaslr: keep}\nnamespaces:\n  fast:\n    size: 1G\n    offset: 5G\n"
             "    filesystem: {type: ext4}\n    mount: {path: /pmem/fast}\n")
    r = pmemd("--root", str(t.path), "plan")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "in sync: nothing to do"
    r = pmemd("--root", str(t.path), "status")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "in sync: 1/1 namespaces mounted with DAX"
    assert "running args:   memmap=1G!5G memmap=512M!6G" in r.stdout
    assert "warning: memmap=512M!6G on the running and next-boot command line was not set by pmemd" in r.stderr


def test_plan_exit_1_on_errors(plain: HostTree) -> None:
    plain.config("version: 1\nnamespaces:\n  low: {size: 1G, offset: 3G}\n")
    r = pmemd("--root", str(plain.path), "plan")
    assert r.returncode == 1
    assert "/etc/pmem.yaml:3:27: error: namespaces.low.offset: 3G is below 4 GiB" in r.stderr
    assert r.stdout.splitlines()[-1] == "no changes planned: fix the errors above"


# --- status ----------------------------------------------------------------------------------------


def test_status_text_and_json(plain: HostTree, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = main(capsys, "--root", str(plain.path), "--config", EXAMPLE, "status")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "boot config not written yet: memmap=512M!4G memmap=1G!5G nokaslr (pmemd apply)"
    assert lines[2].split() == ["NAMESPACE", "DESIRED", "CONFIGURED", "RUNNING", "DEVICE", "/", "MOUNT"]
    assert lines[3].split() == ["bulk", "memmap=512M!4G", "no", "declared", "-"]
    assert "running args:   (no memmap)" in lines and "next-boot args: (no memmap)" in lines
    rc, out, _ = main(capsys, "--root", str(plain.path), "--config", EXAMPLE, "status", "--json")
    j = json.loads(out)
    assert j["format"] == 1
    assert set(j) == {"format", "in_sync", "summary", "namespaces", "pending_reboot", "reboot_needed", "issues",
                      "trial", "pending_actions", "last_actions"}
    assert j["namespaces"][0] == {"name": "bulk", "desired": {"token": "memmap=512M!4G", "start": 4 * GIB,
                                                             "size": GIB // 2},
                                  "configured": False, "running": "declared", "device": None, "mount": None,
                                  "dax": None, "diagnosis": []}
    assert len(j["pending_actions"]) == 2 and j["last_actions"] == []


def test_status_of_a_converged_host(tmp_path: Path) -> None:
    t = converged(tmp_path)
    r = pmemd("--root", str(t.path), "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "in sync: 1/1 namespaces mounted with DAX"
    assert lines[3].split() == ["fast", "memmap=1G!5G", "yes", "mounted", "/dev/pmem0", "on", "/pmem/fast", "(dax)"]
    assert "running args:   memmap=1G!5G nokaslr" in lines


def test_status_exit_1_and_diagnosis_for_a_failed_region(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    t = converged(tmp_path)
    t.write("/proc/self/mountinfo", "")
    t.kmsg(["nd_pmem: probe of namespace0.0 failed with error -95"])
    import shutil
    shutil.rmtree(t.p("/sys/devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block"))
    rc, out, _ = main(capsys, "--root", str(t.path), "status")
    assert rc == 1
    assert "! region0 exists but its namespace has no device (not probed yet, or the probe failed)" in out
    assert "! nd_pmem: probe of namespace0.0 failed with error -95" in out


def test_status_shows_the_last_actions(tmp_path: Path, runner: RecordingRunner, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, no_journal: None) -> None:
    from helpers import FakeUpdateGrub, in_root

    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config((REPO / "examples/pmem.yaml").read_text())
    runner.expect(*in_root(t.path, "update-grub"), handler=FakeUpdateGrub(t.path))
    monkeypatch.setattr(cli, "SubprocessRunner", lambda: runner)
    rc, out, _ = main(capsys, "--root", str(t.path), "apply")
    assert rc == 0 and "[ok] boot config (grub): add memmap=512M!4G memmap=1G!5G nokaslr" in out
    rc, out, _ = main(capsys, "--root", str(t.path), "status", "--json")
    j = json.loads(out)
    assert [(e["action"], e["result"]) for e in j["last_actions"]] == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert j["pending_reboot"]["reason"] == "memmap=512M!4G memmap=1G!5G nokaslr added"
    assert j["summary"].startswith("reboot pending since ")


# --- config, schema, validate ------------------------------------------------------------------------


def test_config_command(plain: HostTree) -> None:
    r = pmemd("--root", str(plain.path), "--config", EXAMPLE, "config")
    assert r.returncode == 0
    assert "namespaces.fast.size: 1073741824" in r.stdout
    assert f"# {EXAMPLE}:" in r.stdout
    assert r.stdout.splitlines()[-1] == f"files read, in merge order: {EXAMPLE}"
    j = json.loads(pmemd("--root", str(plain.path), "--config", EXAMPLE, "config", "--json").stdout)
    assert j["format"] == 1
    assert set(j) == {"format", "config", "files", "shadowed", "masked", "values"}
    assert j["config"]["namespaces"]["bulk"]["offset"] == "auto"


def test_schema_is_a_valid_json_schema_that_accepts_the_examples(tmp_path: Path) -> None:
    r = pmemd("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#" and schema["title"] == "pmem.yaml"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    import yaml

    for example in (REPO / "examples/pmem.yaml", REPO / "examples/pmem.d/50-pmdk-tests.yaml"):
        data = yaml.safe_load(example.read_text())  # the drop-in has no version: accepted
        assert list(validator.iter_errors(data)) == [], example
    bad: list[dict[str, Any]] = [
        {"version": 1, "namespaces": {"x": {"size": "4GB"}}},
        {"version": 1, "namespaces": {"x": {"size": "1G", "filesytem": {"type": "ext4"}}}},
        {"version": 1, "settings": {"reboot": "sometimes"}},
        {"version": 2},
        {"version": 1, "namespaces": {"Bad Name": {"size": "1G"}}},
    ]
    for data in bad:
        assert list(validator.iter_errors(data)), data
    # every field is described, for editors
    ns = schema["definitions"]["Namespace"]["properties"]
    assert all("description" in v for v in ns.values())


def test_validate_ok(plain: HostTree) -> None:
    r = pmemd("--root", str(plain.path), "--config", EXAMPLE, "validate")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines() == [
        "ok: 2 namespaces from 1 file, valid for this host",
        "  bulk: memmap=512M!4G (lowest free 128 MiB-aligned range above 4 GiB in firmware System RAM entry 2 "
        "[0x100000000-0x23fffffff])",
        "  fast: memmap=1G!5G (fixed offset from the config)",
    ]


def test_validate_reports_host_errors_with_file_and_line(plain: HostTree) -> None:
    plain.config("version: 1\nnamespaces:\n  big:\n    size: 6G\n    offset: 4G\n  fine: {size: 1G}\n")
    r = pmemd("--root", str(plain.path), "validate")
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("/etc/pmem.yaml:5:13: error: namespaces.big.offset: range [0x100000000-0x27fffffff] "
                           "is not inside one firmware System RAM entry")
    plain.config("version: 1\nnamespaces:\n  big:\n    size: 4G\n    offset: 4G\n")
    r = pmemd("--root", str(plain.path), "validate")
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()  # a default value has no file position
    assert line.startswith("error: settings.min_free_ram: only ") and "less than min_free_ram 4 GiB" in line


# --- user errors: one line each, no traceback ----------------------------------------------------------


@pytest.mark.parametrize(("setup", "argv", "expected"), [
    ("bad-yaml", ["plan"], ["/etc/pmem.yaml:4:1: YAML syntax: "]),
    ("missing-config", ["plan"], ["/etc/pmem.yaml:1:1: the main config file is missing, so pmemd changes nothing."]),
    ("none", ["--config", "/nonexistent/pmem.yaml", "status"],
     ["/nonexistent/pmem.yaml:1:1: the main config file is missing"]),
    ("none", ["--root", "/nonexistent-root-dir", "plan"], ["pmemd: --root /nonexistent-root-dir: no such directory"]),
    ("damaged-state", ["plan"], ["pmemd: /var/lib/pmemd/state.json is damaged ("]),
    ("state-not-an-object", ["status"], ["pmemd: /var/lib/pmemd/state.json is damaged ("]),
    ("two-errors", ["validate"], ["/etc/pmem.yaml:3:", "/etc/pmem.yaml:5:"]),
    ("group-writable", ["config"], ["/etc/pmem.yaml:1:1: refused: writable by group or others (mode 0664)"]),
])
def test_user_errors_are_one_line_each_without_traceback(tmp_path: Path, setup: str, argv: list[str],
                                                          expected: list[str]) -> None:
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    if setup == "bad-yaml":
        t.config("version: 1\nnamespaces:\n- [\n")
    elif setup == "damaged-state":
        t.config("version: 1\n")
        t.write("/var/lib/pmemd/state.json", "{not json")
    elif setup == "state-not-an-object":
        t.config("version: 1\n")
        t.write("/var/lib/pmemd/state.json", "[1, 2]\n")
    elif setup == "two-errors":
        t.config("version: 1\nnamespaces:\n  a: {size: 4GB}\n  b:\n    size: 010G\n")
    elif setup == "group-writable":
        t.config("version: 1\n", mode=0o664)
    if not any(a == "--root" for a in argv):
        argv = ["--root", str(t.path), *argv]
    r = pmemd(*argv)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == len(expected), lines
    for line, prefix in zip(lines, expected, strict=True):
        assert line.startswith(prefix), (line, prefix)


def test_in_process_user_error_and_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = main(capsys, "--root", str(tmp_path / "missing"), "plan")
    assert (rc, out, err) == (1, "", f"pmemd: --root {tmp_path / 'missing'}: no such directory\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("pmemd ")


def test_in_process_plan_with_a_recording_runner(tmp_path: Path, runner: RecordingRunner,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with an unmounted blank pmem0: the observer's two detectors are the only commands."""
    t = converged(tmp_path)
    t.write("/proc/self/mountinfo", "")
    t.write("/dev/pmem0", "")
    FakeDevices(t.path).install(runner)
    monkeypatch.setattr(cli, "SubprocessRunner", lambda: runner)
    rc, out, _ = main(capsys, "--root", str(t.path), "plan", "--json")
    j = json.loads(out)
    assert rc == 2 and [a["kind"] for a in j["actions"]] == ["mkfs", "mount", "verify-dax"]
    assert [c[0] for c in runner.calls] == ["blkid", "wipefs"]
    assert runner.calls[0] == ("blkid", "-p", "-o", "export", str(t.p("/dev/pmem0")))


def test_render_of_the_converged_tree_dropin(tmp_path: Path) -> None:
    t = converged(tmp_path)
    assert t.read("/etc/default/grub.d/99-pmemd.cfg") == render_dropin(("memmap=1G!5G", "nokaslr"))


def test_usage_errors_do_not_exit_with_the_changes_pending_code(plain: HostTree) -> None:
    r = pmemd("--root", str(plain.path), "plan", "--jsn")
    """exit 2 means "changes pending" to scripts; a typo must not look like that."""
    assert "unrecognized arguments: --jsn" in r.stderr
    assert r.returncode == 1


# --- one error channel, machine output on refusal, candidate drop-ins -------------------------


def test_refused_config_with_json_prints_one_error_document(plain: HostTree) -> None:
    plain.config("version: 1\nnamespaces:\n  fast: {size: 1G, offset: 5G, colour: red}\n")
    for command in ("plan", "status", "config"):
        r = pmemd("--root", str(plain.path), command, "--json")
        assert r.returncode == 1, command
        doc = json.loads(r.stdout)  # exactly one JSON document, nothing else on stdout
        assert doc["format"] == 1 and set(doc) == {"format", "errors"}
        (err,) = doc["errors"]
        assert (err["file"], err["line"], err["key"]) == ("/etc/pmem.yaml", 3, "namespaces.fast.colour")
        assert err["column"] > 1 and err["message"].startswith("unknown key 'colour'")
        assert r.stderr.startswith("/etc/pmem.yaml:3:")  # the same error, for people


def test_every_diagnostic_goes_to_stderr(plain: HostTree) -> None:
    plain.config("version: 1\nnamespaces:\n  low: {size: 1G, offset: 3G}\n")
    for command in ("validate", "plan", "status", "apply"):
        r = pmemd("--root", str(plain.path), command)
        assert r.returncode == 1, command
        assert "/etc/pmem.yaml:3:27: error: namespaces.low.offset: 3G is below 4 GiB" in r.stderr, command
        shown = r.stdout.splitlines()[1:] if command == "status" else r.stdout.splitlines()
        assert not [ln for ln in shown if "3G is below 4 GiB" in ln], command  # status: only its summary line


def test_validate_dropin_checks_a_candidate_as_if_installed(plain: HostTree, tmp_path: Path) -> None:
    plain.config("version: 1\nnamespaces:\n  fast: {size: 1G, offset: 5G}\n")
    good, bad = tmp_path / "cand-good.yaml", tmp_path / "cand-bad.yaml"
    good.write_text("namespaces:\n  bulk: {size: 512M, offset: 6G}\n")
    bad.write_text("namespaces:\n  fast: {size: 2G}\n")  # disagrees with the main file's size
    before = sorted(p.name for p in plain.p("/etc/pmem.d").glob("*")) if plain.p("/etc/pmem.d").exists() else []
    r = pmemd("--root", str(plain.path), "validate", "--dropin", str(good), "--as", "50-bulk.yaml")
    assert r.returncode == 0, r.stderr
    assert "ok: 2 namespaces from 2 files" in r.stdout and "bulk: memmap=512M!6G" in r.stdout
    r = pmemd("--root", str(plain.path), "validate", "--dropin", str(bad))
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "namespaces.fast.size" in r.stderr
    r = pmemd("--root", str(plain.path), "validate", "--dropin", str(good), "--as", "bulk.conf")
    assert r.returncode == 1 and "is not a drop-in file name" in r.stderr
    now = sorted(p.name for p in plain.p("/etc/pmem.d").glob("*")) if plain.p("/etc/pmem.d").exists() else []
    assert now == before  # nothing installed


def test_validate_dropin_shadows_the_installed_fragment_of_that_name(plain: HostTree, tmp_path: Path) -> None:
    plain.config("version: 1\nnamespaces:\n  fast: {size: 1G, offset: 5G}\n")
    plain.write("/etc/pmem.d/50-bulk.yaml", "namespaces:\n  bulk: {size: 512M, offset: 3G}\n")  # refused
    os.chmod(plain.p("/etc/pmem.d/50-bulk.yaml"), 0o644)
    assert pmemd("--root", str(plain.path), "validate").returncode == 1
    fixed = tmp_path / "50-bulk.yaml"
    fixed.write_text("namespaces:\n  bulk: {size: 512M, offset: 6G}\n")
    r = pmemd("--root", str(plain.path), "validate", "--dropin", str(fixed))
    assert r.returncode == 0, r.stderr


def test_json_issues_carry_the_file_line_and_column_of_their_key(plain: HostTree) -> None:
    plain.config("version: 1\nnamespaces:\n  low: {size: 1G, offset: 3G}\n")
    for command in ("plan", "status"):
        r = pmemd("--root", str(plain.path), command, "--json")
        (issue,) = [i for i in json.loads(r.stdout)["issues"] if i["severity"] == "error"]
        assert (issue["file"], issue["line"], issue["column"], issue["key"]) == (
            "/etc/pmem.yaml", 3, 27, "namespaces.low.offset"), command

"""Tier 2: ``pmemd apply`` on copies of host trees, with the deny-by-default RecordingRunner.

Boot-loader tools that cannot run against a tree here are answered by the fakes in
tests/helpers.py (``FakeUpdateGrub``, ``FakeGrubby``; ``FakeDevices`` for the pmem block
devices this machine does not have). The executor chroots boot-loader and system tools into the
tree (``chroot <tree> update-grub``) because ``--root`` is not ``/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FIXTURES,
    GIB,
    REPO,
    REST,
    SYSTEMCTL_HELP_257,
    SYSTEMD_ANALYZE_CALENDAR,
    FakeDevices,
    FakeGrubby,
    FakeUpdateGrub,
    HostTree,
    RecordingRunner,
    Rule,
    copy_fixture,
    in_root,
    program,
    tree_digest,
)

import pmemd.effects
from pmemd import cli
from pmemd.actions import SetKernelArgs
from pmemd.bootloader.grub import render_dropin
from pmemd.bootloader.syntax import parse_bls_entry, parse_grub_cfg
from pmemd.engine import PassResult, Target, apply
from pmemd.journal import Journal
from pmemd.state import loads

pytestmark = pytest.mark.usefixtures("no_journal")

EXAMPLE = (REPO / "examples/pmem.yaml").read_text()
TOKENS = ("memmap=512M!4G", "memmap=1G!5G", "nokaslr")  # the example config on these small hosts
ONE_NS = "version: 1\nsettings: {reboot: flag}\nnamespaces:\n  fast: {size: 1G, offset: 5G}\n"
NO_NS = "version: 1\nnamespaces: {}\n"


def run_apply(t: HostTree, runner: RecordingRunner, *, dry_run: bool = False) -> list[PassResult]:
    target = Target.make(str(t.path))
    return apply(target, runner, Journal(root=None if dry_run else target.root, sender=None), dry_run=dry_run)


def outcomes(passes: list[PassResult]) -> list[tuple[str, str]]:
    return [(o.action.kind.value, o.result) for p in passes for o in p.outcomes]


def cli_run(t: HostTree, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "SubprocessRunner", lambda: runner)
    rc = cli.main(["--root", str(t.path), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def state(t: HostTree) -> Any:
    return loads(t.read("/var/lib/pmemd/state.json"))


def grub_linux_args(t: HostTree) -> list[tuple[str, ...]]:
    return [e.args for e in parse_grub_cfg("/boot/grub/grub.cfg", t.read("/boot/grub/grub.cfg"))]


def converge(t: HostTree, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch) -> FakeDevices:
    """Apply, reboot, apply: the namespaces formatted and mounted (STATX_ATTR_DAX patched: no
    DAX-capable filesystem exists on this machine)."""
    run_apply(t, runner)
    t.reboot("boot-2")
    devices = FakeDevices(t.path)
    devices.install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    run_apply(t, runner)
    return devices


@pytest.fixture
def debian(tmp_path: Path, runner: RecordingRunner) -> tuple[HostTree, FakeUpdateGrub]:
    """The real debian13-qemu-plain capture (copied), the example config, and a fake update-grub."""
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE)
    fake = FakeUpdateGrub(t.path)
    runner.expect(*in_root(t.path, "update-grub"), handler=fake)
    return t, fake


# --- Debian GRUB -------------------------------------------------------------------------------


def test_debian_apply_writes_the_dropin_and_runs_update_grub_in_the_root(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, _ = debian
    user_grub = t.read("/etc/default/grub")
    passes = run_apply(t, runner)
    assert outcomes(passes) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert runner.calls == [("chroot", str(t.path), "update-grub")]
    # exactly the canonical tokens, in pmemd's own drop-in; the user's file is untouched
    assert t.read("/etc/default/grub.d/99-pmemd.cfg") == render_dropin(TOKENS)
    assert t.read("/etc/default/grub.d/99-pmemd.cfg").splitlines()[-1] == (
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX memmap=512M!4G memmap=1G!5G nokaslr"')
    assert t.read("/etc/default/grub") == user_grub
    # the regenerated grub.cfg carries them in every entry, recovery included
    for args in grub_linux_args(t):
        assert [a for a in args if a.startswith(("memmap=", "nokaslr"))] == list(TOKENS)
    # the state file records what pmemd owns
    owned = state(t)
    assert owned.kernel_args == TOKENS and owned.backend == "grub"
    assert {n: (o.start, o.size) for n, o in owned.namespaces.items()} == {"fast": (5 * GIB, GIB),
                                                                          "bulk": (4 * GIB, GIB // 2)}
    assert owned.pending_reboot is not None and set(owned.pending_reboot.added) == set(TOKENS)
    # the Debian reboot convention
    assert t.exists("/run/reboot-required")
    assert t.read("/run/reboot-required.pkgs") == "pmemd\n"
    log = [json.loads(ln) for ln in t.read("/var/lib/pmemd/actions.jsonl").splitlines()]
    assert [(e["action"], e["result"]) for e in log] == [("set-kernel-args", "ok"), ("reboot", "ok")]


def test_second_apply_does_nothing(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    t, fake = debian
    run_apply(t, runner)
    before = tree_digest(t.path)
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "apply")
    assert (rc, out.strip()) == (0, "in sync: nothing to do"), err
    assert fake.runs == 1 and len(runner.calls) == 1
    assert tree_digest(t.path) == before
    assert t.read("/run/reboot-required.pkgs") == "pmemd\n"
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "plan")
    assert rc == 0 and "in sync: nothing to do" in out


def test_reboot_required_pkgs_gets_pmemd_once(debian: tuple[HostTree, FakeUpdateGrub],
                                              runner: RecordingRunner) -> None:
    t, _ = debian
    t.write("/run/reboot-required.pkgs", "linux-image-6.12.117+deb13-amd64\n")
    t.config(ONE_NS)
    run_apply(t, runner)
    t.config(EXAMPLE)  # more namespaces: a new reboot reason, flagged again
    passes = run_apply(t, runner)
    assert ("reboot", "ok") in outcomes(passes)
    assert t.read("/run/reboot-required.pkgs") == "linux-image-6.12.117+deb13-amd64\npmemd\n"


def test_removing_a_namespace_removes_only_pmemds_token(tmp_path: Path, runner: RecordingRunner) -> None:
    """debian-grub-foreign-memmap: the admin's memmap=1G!8G in /etc/default/grub stays, always."""
    t = copy_fixture("debian-grub-foreign-memmap", tmp_path / "host")
    runner.expect(*in_root(t.path, "update-grub"), handler=FakeUpdateGrub(t.path))
    user_grub = t.read("/etc/default/grub")
    t.config(EXAMPLE)
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    for args in grub_linux_args(t):  # the admin's token first (GRUB_CMDLINE_LINUX), then the drop-in's
        assert [a for a in args if a.startswith(("memmap=", "nokaslr"))] == ["memmap=1G!8G", *TOKENS]

    t.config(EXAMPLE.replace("  bulk:", "  gone-bulk:").split("  gone-bulk:")[0])  # drop 'bulk'
    passes = run_apply(t, runner)
    assert outcomes(passes)[0] == ("set-kernel-args", "ok")
    (first, *_) = passes[0].plan.actions
    assert isinstance(first, SetKernelArgs) and first.remove == ("memmap=512M!4G",)
    assert t.read("/etc/default/grub.d/99-pmemd.cfg") == render_dropin(("memmap=1G!5G", "nokaslr"))
    assert t.read("/etc/default/grub") == user_grub
    for args in grub_linux_args(t):
        assert "memmap=1G!8G" in args and "memmap=1G!5G" in args and "memmap=512M!4G" not in args
    assert state(t).kernel_args == ("memmap=1G!5G", "nokaslr")
    assert "bulk" not in state(t).namespaces

    t.config(NO_NS)
    run_apply(t, runner)
    assert not t.exists("/etc/default/grub.d/99-pmemd.cfg")
    assert t.read("/etc/default/grub") == user_grub
    for args in grub_linux_args(t):
        assert [a for a in args if a.startswith(("memmap", "nokaslr"))] == ["memmap=1G!8G"]
    assert state(t).kernel_args == () and state(t).namespaces == {}


def test_foreign_memmap_is_reported_by_plan(tmp_path: Path, runner: RecordingRunner,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    t = copy_fixture("debian-grub-foreign-memmap", tmp_path / "host")
    t.config(EXAMPLE)
    rc, _, err = cli_run(t, runner, monkeypatch, capsys, "plan")
    assert rc == 2
    assert ("warning: memmap=1G!8G on the running and next-boot command line was not set by pmemd: pmemd "
            "leaves it alone") in err
    # a namespace over the admin's range is an overlap error, and nothing is planned
    t.config("version: 1\nnamespaces:\n  x: {size: 2G, offset: 7G}\n")
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "plan")
    assert rc == 1 and "overlaps memmap=1G!8G (not set by pmemd)" in err
    assert "no changes planned: fix the errors above" in out


def test_update_grub_that_forgets_a_token_restores_the_backup(
        tmp_path: Path, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE)
    broken = FakeUpdateGrub(t.path, forget=frozenset({"memmap=1G!5G"}))
    runner.expect(*in_root(t.path, "update-grub"), handler=broken)
    grub_cfg = t.read("/boot/grub/grub.cfg")
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "apply")
    assert rc == 1
    assert "[failed] boot config (grub)" in out
    assert "read-back of the next-boot arguments does not match: missing memmap=1G!5G" in out
    assert "the previous boot config was restored" in out
    assert "[skipped] flag a pending reboot" in out
    assert not t.exists("/etc/default/grub.d/99-pmemd.cfg")  # it did not exist before
    assert t.read("/boot/grub/grub.cfg") == grub_cfg  # regenerated from the restored files
    assert broken.runs == 2  # the write's, then the regeneration after the restore
    assert not t.exists("/run/reboot-required")


def test_failing_update_grub_restores_a_previous_dropin(debian: tuple[HostTree, FakeUpdateGrub],
                                                       runner: RecordingRunner) -> None:
    t, fake = debian
    t.config(ONE_NS)
    run_apply(t, runner)
    old = t.read("/etc/default/grub.d/99-pmemd.cfg")
    fake.returncode = 1
    t.config(EXAMPLE)
    passes = run_apply(t, runner)
    (failed,) = [o for p in passes for o in p.outcomes if o.result == "failed"]
    assert "update-grub` exited 1: grub-mkconfig: error: simulated failure" in failed.message
    assert failed.message.endswith("the previous boot config was restored")
    assert t.read("/etc/default/grub.d/99-pmemd.cfg") == old


# --- dry run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["debian13-qemu-plain", "fedora-bls-grubby", "systemd-boot"])
def test_dry_run_writes_nothing_and_lists_the_side_effects(
        tmp_path: Path, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], fixture: str) -> None:
    t = copy_fixture(fixture, tmp_path / "host")
    t.config(EXAMPLE)
    before = tree_digest(t.path)
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "apply", "--dry-run")
    assert rc == 2, (out, err)
    assert tree_digest(t.path) == before
    assert runner.calls == []  # not even update-grub or grubby "for real"
    assert "[dry-run] boot config" in out and "[dry-run] flag a pending reboot" in out
    effects = out.split("side effects skipped in this dry run:\n", 1)[1].splitlines()
    expected = {
        "debian13-qemu-plain": ["write: /etc/default/grub.d/99-pmemd.cfg", f"run: chroot {t.path} update-grub"],
        "fedora-bls-grubby": [f"run: chroot {t.path} grubby --update-kernel=ALL --args={' '.join(TOKENS)}"],
        "systemd-boot": ["write: /etc/kernel/cmdline",
                         "write: /efi/loader/entries/3f1c6a0e5b2d4c8e9a7b1d2e3f405162-6.12.117+deb13-amd64.conf",
                         "write: /efi/loader/entries/3f1c6a0e5b2d4c8e9a7b1d2e3f405162-6.12.57+deb13-amd64.conf"],
    }[fixture]
    assert [e.strip() for e in effects] == [*expected, "touch: /run/reboot-required",
                                            "append: /run/reboot-required.pkgs pmemd"]


def test_dry_run_json(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    t, _ = debian
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "apply", "--dry-run", "--json")
    j = json.loads(out)
    assert rc == 2 and j["dry_run"] is True
    assert [(a["kind"], a["result"]) for a in j["passes"][0]["actions"]] == [
        ("set-kernel-args", "dry-run"), ("reboot", "dry-run")]
    assert "write: /etc/default/grub.d/99-pmemd.cfg" in j["passes"][0]["side_effects"]
    assert "memmap=512M!4G memmap=1G!5G nokaslr" in j["summary"]


# --- grubby (Fedora / RHEL) ---------------------------------------------------------------------


def test_grubby_gets_all_tokens_in_one_call(tmp_path: Path, runner: RecordingRunner) -> None:
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    t.config(EXAMPLE)
    fake = FakeGrubby(t.path)
    runner.expect(*in_root(t.path, "grubby", "--update-kernel=ALL", REST), handler=fake)
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert runner.calls == [("chroot", str(t.path), "grubby", "--update-kernel=ALL",
                             "--args=memmap=512M!4G memmap=1G!5G nokaslr")]
    for conf in sorted(t.p("/boot/loader/entries").glob("*.conf")):
        opts = parse_bls_entry(conf.read_text())["options"].split()
        assert opts == ["root=UUID=7d2f5a1c-3b4e-4f6a-9c8d-2e1f0a9b8c7d", "ro", "rootflags=subvol=root",
                        "rhgb", "quiet", *TOKENS], conf.name
    assert t.read("/etc/kernel/cmdline").split()[-3:] == list(TOKENS)
    assert 'GRUB_CMDLINE_LINUX="rhgb quiet memmap=512M!4G memmap=1G!5G nokaslr"' in t.read("/etc/default/grub")
    assert state(t).kernel_args == TOKENS and state(t).backend == "grubby"
    assert run_apply(t, runner)[-1].outcomes == () and fake.runs == 1
    # removing one namespace: one call, removing exactly pmemd's stale token
    t.config(EXAMPLE.split("  bulk:")[0])
    run_apply(t, runner)
    assert runner.calls[-1] == ("chroot", str(t.path), "grubby", "--update-kernel=ALL",
                                "--remove-args=memmap=512M!4G", "--args=memmap=1G!5G nokaslr")


def test_grubby_on_rhel8_updates_kernelopts(tmp_path: Path, runner: RecordingRunner) -> None:
    t = copy_fixture("rhel8-bls-kernelopts", tmp_path / "host")
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grubby", "--update-kernel=ALL", REST), handler=FakeGrubby(t.path))
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    env = t.read("/boot/grub2/grubenv")
    assert len(env) == 1024
    assert re.search(r"^kernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto .* rhgb quiet "
                     r"memmap=512M!4G memmap=1G!5G nokaslr$", env, re.M)
    for conf in t.p("/boot/loader/entries").glob("*.conf"):
        assert "options $kernelopts" in conf.read_text()  # still the variable


def test_grubby_host_keeps_the_admins_memmap_through_pmemds_changes(tmp_path: Path, runner: RecordingRunner) -> None:
    """The real grubby drops every memmap= of an entry when one is added (FakeGrubby does the
    same): pmemd passes the admin's token, unchanged, in the same call, and never removes it."""
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    for conf in t.p("/boot/loader/entries").glob("*.conf"):
        conf.write_text(conf.read_text().replace("rhgb quiet", "rhgb quiet memmap=1G!8G"))
    t.config(EXAMPLE)
    grubby = FakeGrubby(t.path)
    runner.expect(*in_root(t.path, "grubby", REST), handler=grubby)
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    (call,) = [c for c in runner.calls if "grubby" in c]
    assert call[-1] == "--args=memmap=1G!8G " + " ".join(TOKENS)
    for conf in t.p("/boot/loader/entries").glob("*.conf"):
        opts = next(ln for ln in conf.read_text().splitlines() if ln.startswith("options ")).split()
        assert [a for a in opts if a.startswith(("memmap=", "nokaslr"))] == ["memmap=1G!8G", *TOKENS]
    # removing pmemd's namespaces removes exactly its tokens; the admin's stays
    t.config("version: 1\nnamespaces: {}\n")
    run_apply(t, runner)
    for conf in t.p("/boot/loader/entries").glob("*.conf"):
        opts = next(ln for ln in conf.read_text().splitlines() if ln.startswith("options ")).split()
        assert [a for a in opts if a.startswith(("memmap=", "nokaslr"))] == ["memmap=1G!8G"]


def test_grubby_refuses_when_entries_disagree_on_foreign_memmap(tmp_path: Path, runner: RecordingRunner) -> None:
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    first = sorted(t.p("/boot/loader/entries").glob("*.conf"))[0]
    first.write_text(first.read_text().replace("rhgb quiet", "rhgb quiet memmap=1G!8G"))
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grubby", REST), handler=FakeGrubby(t.path))
    entries = sorted(t.p("/boot/loader/entries").glob("*.conf"))
    before = [p.read_text() for p in entries]
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "set-kernel-args"]
    assert o.result == "failed" and "carry different memmap= arguments that pmemd did not set" in o.message
    assert not [c for c in runner.calls if "grubby" in c]
    assert [p.read_text() for p in entries] == before


def test_a_failing_grubby_leaves_its_tokens_claimed(tmp_path: Path, runner: RecordingRunner) -> None:
    """grubby edits the entries itself, so a failure part-way cannot be undone from backups:
    the tokens stay recorded as pmemd's, so a later pass can remove them (never orphaned)."""
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grubby", "--update-kernel=ALL", REST), returncode=1,
                  stderr="grubby: error writing /boot/loader/entries/x.conf: No space left on device")
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "set-kernel-args"]
    assert o.result == "failed" and "may have changed the entries part-way" in o.message
    assert "keeps counting" in o.message
    assert set(state(t).kernel_args) == set(TOKENS)


def test_grub2_mkconfig_with_bls_and_without_grubby_is_refused_with_advice(tmp_path: Path,
                                                                          runner: RecordingRunner) -> None:
    """GRUB_ENABLE_BLSCFG=true: the arguments live in the BLS entries. A grub2-mkconfig without
    --update-bls-cmdline cannot put them there, so pmemd refuses before writing anything."""
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    t.p("/usr/sbin/grubby").unlink()
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grub2-mkconfig", "--help"), stdout="Usage: grub2-mkconfig [OPTION]\n")
    before = tree_digest(t.path)
    passes = run_apply(t, runner)
    (o, skipped) = [o for p in passes for o in p.outcomes]
    assert o.result == "failed" and "has no --update-bls-cmdline" in o.message
    assert "dnf install grubby" in o.message and skipped.result == "skipped"
    after = tree_digest(t.path)
    lock = {"run", "run/pmemd.lock"} - set(before)  # pmemd's own log, state and lock
    assert {k: v for k, v in after.items() if not k.startswith("var") and k not in lock} == before


def test_grub2_mkconfig_with_bls_passes_update_bls_cmdline(tmp_path: Path, runner: RecordingRunner) -> None:
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    t.p("/usr/sbin/grubby").unlink()
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grub2-mkconfig", "--help"),
                  stdout="  --update-bls-cmdline    overwrite BLS cmdline args with default args\n")
    runner.expect(*in_root(t.path, "grub2-mkconfig", "-o", "/boot/grub2/grub.cfg", "--update-bls-cmdline"),
                  handler=FakeGrubby(t.path).mkconfig_bls)
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert " ".join(TOKENS) in t.read("/etc/default/grub")


@pytest.fixture
def mkconfig_debian(tmp_path: Path, runner: RecordingRunner) -> tuple[HostTree, FakeUpdateGrub]:
    """A Debian tree forced to the grub2-mkconfig layout; grub2-mkconfig is the fake update-grub."""
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE.replace("bootloader: auto", "bootloader: grub2-mkconfig", 1))
    gen = FakeUpdateGrub(t.path)
    runner.expect(*in_root(t.path, "grub2-mkconfig", "-o", "/boot/grub/grub.cfg"), handler=gen)
    return t, gen


def test_grub2_mkconfig_edits_only_its_tokens_and_gives_the_file_back(
        mkconfig_debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, gen = mkconfig_debian
    user_grub = t.read("/etc/default/grub")
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert gen.runs == 1 and not t.exists("/etc/default/grub.d/99-pmemd.cfg")
    (line,) = [ln for ln in t.read("/etc/default/grub").splitlines() if ln.startswith("GRUB_CMDLINE_LINUX=")]
    (before,) = [ln for ln in user_grub.splitlines() if ln.startswith("GRUB_CMDLINE_LINUX=")]
    assert line == before[:-1] + " " + " ".join(TOKENS) + '"'
    changed = [a for a, b in zip(user_grub.splitlines(), t.read("/etc/default/grub").splitlines(), strict=True)
               if a != b]
    assert changed == [before]  # every other line as it was
    from pmemd.bootloader import read_boot_config
    from pmemd.fsroot import Root

    boot = read_boot_config(Root(t.path), "grub2-mkconfig")  # what GRUB will boot: the regenerated grub.cfg
    assert [a for a in boot.default_args or () if a.startswith(("memmap=", "nokaslr"))] == list(TOKENS)
    t.config("version: 1\nsettings: {bootloader: grub2-mkconfig}\nnamespaces: {}\n")
    assert outcomes(run_apply(t, runner))[0] == ("set-kernel-args", "ok")
    assert t.read("/etc/default/grub") == user_grub  # byte for byte


@pytest.mark.parametrize(("esp", "want"), [
    ({"centos/grub.cfg": "menuentry 'CentOS' { linux /vmlinuz root=/dev/sda1 }\n"}, "/boot/efi/EFI/centos/grub.cfg"),
    ({"fedora/grub.cfg": "search --no-floppy --fs-uuid --set=dev 1234\nset prefix=($dev)/grub2\n"
                         "export $prefix\nconfigfile $prefix/grub.cfg\n"}, "/boot/grub2/grub.cfg"),
    ({}, "/boot/grub2/grub.cfg"),
])
def test_grub2_mkconfig_writes_the_config_grub_really_reads(tmp_path: Path, esp: dict[str, str], want: str) -> None:
    from pmemd.bootloader.grub2_mkconfig import target
    from pmemd.fsroot import Root

    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    for rel, text in esp.items():
        t.write(f"/boot/efi/EFI/{rel}", text)
    assert target(Root(t.path))[0] == want


# --- systemd-boot --------------------------------------------------------------------------------


def test_systemd_boot_updates_kernel_cmdline_and_every_entry(tmp_path: Path, runner: RecordingRunner) -> None:
    t = copy_fixture("systemd-boot", tmp_path / "host")
    t.config(EXAMPLE)
    entries = sorted(t.p("/efi/loader/entries").glob("*.conf"))
    before = {e.name: e.read_text() for e in entries}
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert runner.calls == []  # no tool needed: pmemd edits the files
    base = ["root=UUID=c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", "ro", "quiet"]
    assert t.read("/etc/kernel/cmdline") == " ".join([*base, *TOKENS]) + "\n"
    for e in entries:
        keys = parse_bls_entry(e.read_text())
        assert keys["options"].split() == [*base, *TOKENS]
        old = parse_bls_entry(before[e.name])
        assert {k: v for k, v in keys.items() if k != "options"} == {k: v for k, v in old.items() if k != "options"}
    t.config(NO_NS)
    run_apply(t, runner)
    assert t.read("/etc/kernel/cmdline") == " ".join(base) + "\n"
    for e in entries:
        assert parse_bls_entry(e.read_text())["options"].split() == base


# --- reboot policies ------------------------------------------------------------------------------


def with_policy(t: HostTree, policy: str) -> None:
    t.config(EXAMPLE.replace("reboot: flag ", f"reboot: {policy} "))


def test_reboot_never_only_records(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, _ = debian
    with_policy(t, "never")
    passes = run_apply(t, runner)
    assert passes[0].outcomes[-1].message == "reboot needed; not flagged (reboot: never)"
    assert not t.exists("/run/reboot-required") and not t.exists("/run/reboot-required.pkgs")
    assert state(t).pending_reboot is not None


def test_reboot_schedule_uses_systemd_calendar_and_systemctl_when(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, _ = debian
    with_policy(t, "schedule")
    t.boot_id("11111111-2222-3333-4444-555555555555")
    runner.expect(*in_root(t.path, "systemd-analyze", "calendar", "--iterations=1"), "Sun 03:00",
                  stdout=SYSTEMD_ANALYZE_CALENDAR)
    runner.expect(*in_root(t.path, "systemctl", "--help"), stdout=SYSTEMCTL_HELP_257)
    runner.expect(*in_root(t.path, "systemctl", "reboot", "--when=2026-11-29 03:00:00"))
    passes = run_apply(t, runner)
    assert passes[0].outcomes[-1].message == "reboot scheduled for 2026-11-29 03:00"
    assert [program(c) for c in runner.calls] == ["update-grub", "systemd-analyze", "systemctl", "systemctl"]
    assert t.exists("/run/reboot-required")
    pending = state(t).pending_reboot
    assert pending.scheduled_for == "2026-11-29T03:00:00"
    assert pending.boot_id == "11111111-2222-3333-4444-555555555555"
    calls = len(runner.calls)
    assert outcomes(run_apply(t, runner)) == [] and len(runner.calls) == calls  # scheduled once

    # the config goes back to the booted state in the same boot: the scheduled reboot is cancelled
    runner.expect(*in_root(t.path, "systemctl", "reboot", "--when=cancel"))
    t.config(NO_NS)
    run_apply(t, runner)
    assert runner.calls[-1] == ("chroot", str(t.path), "systemctl", "reboot", "--when=cancel")
    assert state(t).pending_reboot is None
    assert not t.exists("/run/reboot-required") and not t.exists("/run/reboot-required.pkgs")


def test_reboot_schedule_with_an_old_systemctl_uses_shutdown(debian: tuple[HostTree, FakeUpdateGrub],
                                                             runner: RecordingRunner) -> None:
    t, _ = debian
    with_policy(t, "schedule")
    runner.expect(*in_root(t.path, "systemd-analyze", "calendar", "--iterations=1"), "Sun 03:00",
                  stdout=SYSTEMD_ANALYZE_CALENDAR)
    runner.expect(*in_root(t.path, "systemctl", "--help"), stdout="systemctl [OPTIONS...] COMMAND ...\n")
    runner.expect(*in_root(t.path, "shutdown", "-r", re.compile(r"\+[0-9]+"), "pmemd: memmap= changed"))
    passes = run_apply(t, runner)
    assert passes[0].outcomes[-1].result == "ok"
    assert program(runner.calls[-1]) == "shutdown"


def test_reboot_schedule_with_a_window_systemd_rejects(debian: tuple[HostTree, FakeUpdateGrub],
                                                       runner: RecordingRunner) -> None:
    t, _ = debian
    t.config(EXAMPLE.replace("reboot: flag ", "reboot: schedule ").replace('"Sun 03:00"', '"Caturday 25:00"'))
    runner.expect(*in_root(t.path, "systemd-analyze", "calendar", "--iterations=1"), "Caturday 25:00", returncode=1,
                  stderr="Failed to parse calendar specification 'Caturday 25:00': Invalid argument")
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "reboot"]
    assert o.result == "failed" and "is not a calendar expression systemd understands" in o.message


def test_reboot_now(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, _ = debian
    with_policy(t, "now")
    runner.expect(*in_root(t.path, "systemctl", "reboot"))
    passes = run_apply(t, runner)
    assert passes[0].outcomes[-1].message == "rebooting now (reboot: now)"
    assert runner.calls[-1] == ("chroot", str(t.path), "systemctl", "reboot")
    assert t.exists("/run/reboot-required")  # flagged too, in case the reboot does not happen


def test_reboot_now_ends_the_pass(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    """Seen in the guest: after `systemctl reboot` the pass went on to mkfs a device while the
    host was shutting down. Nothing runs after the reboot is started."""
    t, _ = debian
    t.config(MOUNTED_NS)
    run_apply(t, runner)
    t.reboot("boot-2")  # fast's device is there and blank
    devices = FakeDevices(t.path)
    devices.install(runner)
    t.config(MOUNTED_NS.replace("reboot: flag", "reboot: now") + "  more: {size: 1G, offset: 6G}\n")
    runner.expect(*in_root(t.path, "systemctl", "reboot"))
    passes = run_apply(t, runner)
    kinds = [(o.action.kind.value, o.result) for p in passes for o in p.outcomes]
    assert kinds[:2] == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert ("mkfs", "skipped") in kinds and ("mkfs", "ok") not in kinds
    assert {o.message for p in passes for o in p.outcomes[2:]} == {"the host is rebooting (reboot: now)"}
    assert devices.mkfs_calls == [] and len(passes) == 1
    assert runner.calls[-1] == ("chroot", str(t.path), "systemctl", "reboot")


# --- the whole cycle: boot args, reboot, mkfs, mount, converged --------------------------------


def test_full_cycle_on_a_debian_tree(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A DAX-capable filesystem cannot exist on this machine: ``statx_dax`` is patched to report
    STATX_ATTR_DAX, everything else (mountinfo check, state, journal) is the real executor."""
    import pmemd.effects

    t, _ = debian
    t.boot_id("boot-1")
    run_apply(t, runner)
    assert [a for a in t.reboot("boot-2") if a.startswith(("memmap=", "nokaslr"))] == list(TOKENS)
    devices = FakeDevices(t.path)
    devices.install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    passes = run_apply(t, runner)
    assert outcomes(passes) == [("clear-reboot", "ok"), ("mkfs", "ok"), ("mkdir", "ok"), ("mount", "ok"),
                                ("verify-dax", "ok"), ("mkfs", "ok"), ("mkdir", "ok"), ("mount", "ok"),
                                ("verify-dax", "ok")]
    pmem0, pmem1 = devices.dev("pmem0"), devices.dev("pmem1")  # 512M!4G is pmem0, 1G!5G pmem1
    assert devices.mkfs_calls == [("mkfs.xfs", "-q", "-b", "size=4096", "-L", "bulk", pmem0),
                                  ("mkfs.ext4", "-q", "-b", "4096", "-L", "fast", pmem1)]
    mounts = [c for c in runner.calls if c[0] == "mount"]
    assert mounts == [("mount", "-t", "xfs", "-o", "dax=always", pmem0, str(t.p("/pmem/bulk"))),
                      ("mount", "-t", "ext4", "-o", "dax=always,noatime", pmem1, str(t.p("/pmem/fast")))]
    assert not t.exists("/run/reboot-required")
    owned = state(t)
    assert owned.pending_reboot is None
    assert owned.namespaces["fast"].filesystem.uuid == devices.signatures[pmem1]["UUID"]
    # pmemd chose each UUID and passed it to mkfs (-U / -m uuid=), so a kill right after mkfs
    # leaves a filesystem the state file already names
    assert devices.mkfs_uuids == [owned.namespaces["bulk"].filesystem.uuid, owned.namespaces["fast"].filesystem.uuid]
    assert owned.namespaces["fast"].mount_path == "/pmem/fast"
    assert owned.namespaces["fast"].verified == "applied"
    # converged: plan is empty, status says so, another apply does nothing
    calls = len(runner.calls)
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "plan")
    assert rc == 0 and "in sync: nothing to do" in out
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "status", "--json")
    j = json.loads(out)
    assert rc == 0 and j["summary"] == "in sync: 2/2 namespaces mounted with DAX"
    assert {n["name"]: (n["running"], n["device"], n["dax"]) for n in j["namespaces"]} == {
        "bulk": ("mounted", "/dev/pmem0", True), "fast": ("mounted", "/dev/pmem1", True)}
    assert outcomes(run_apply(t, runner)) == []
    assert len(runner.calls) == calls  # mounted devices are not even probed

    # the next reboot: RAM is blank again, so pmemd formats again (its own UUID is gone)
    t.reboot("boot-3")
    old_uuids = {d: sig["UUID"] for d, sig in devices.signatures.items()}
    devices.signatures.clear()  # the devices are RAM
    assert outcomes(run_apply(t, runner)) == [("mkfs", "ok"), ("mount", "ok"), ("verify-dax", "ok")] * 2
    assert state(t).namespaces["fast"].filesystem.uuid not in old_uuids.values()


def test_pmemd_own_filesystem_survives_a_pass_without_reboot(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unmounted by someone, still holding pmemd's UUID: mounted again, never reformatted."""

    t, _ = debian
    devices = converge(t, runner, monkeypatch)
    runner.run(["umount", str(t.p("/pmem/fast"))])  # an admin's umount
    passes = run_apply(t, runner)
    assert outcomes(passes) == [("mount", "ok"), ("verify-dax", "ok")]
    assert len(devices.mkfs_calls) == 2


@pytest.mark.parametrize(("fixture", "xfs_args", "dax"), [
    ("fedora-bls-grubby", ("mkfs.xfs", "-q", "-b", "size=4096", "-L", "bulk"), "dax=always"),
    ("rhel8-bls-kernelopts", ("mkfs.xfs", "-q", "-b", "size=4096", "-m", "reflink=0", "-L", "bulk"), "dax"),
    ("systemd-boot", ("mkfs.xfs", "-q", "-b", "size=4096", "-L", "bulk"), "dax=always"),
])
def test_full_cycle_on_every_boot_loader_layout(tmp_path: Path, runner: RecordingRunner,
                                                monkeypatch: pytest.MonkeyPatch, fixture: str,
                                                xfs_args: tuple[str, ...], dax: str) -> None:
    """statx_dax patched as in the Debian cycle; the RHEL 8 tree runs kernel 4.18 (dev/kmsg), so
    xfs gets reflink=0 and the mount the legacy `dax` option."""
    import pmemd.effects

    t = copy_fixture(fixture, tmp_path / "host")
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grubby", REST), handler=FakeGrubby(t.path))
    assert outcomes(run_apply(t, runner)) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert [a for a in t.reboot("boot-2") if a.startswith(("memmap=", "nokaslr"))] == list(TOKENS)
    devices = FakeDevices(t.path)
    devices.install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    assert outcomes(run_apply(t, runner)) == [("clear-reboot", "ok"), *[
        ("mkfs", "ok"), ("mkdir", "ok"), ("mount", "ok"), ("verify-dax", "ok")] * 2]
    assert devices.mkfs_calls[0] == (*xfs_args, devices.dev("pmem0"))
    assert [c[4] for c in runner.calls if c[0] == "mount"] == [dax, f"{dax},noatime"]
    calls = len(runner.calls)
    assert outcomes(run_apply(t, runner)) == [] and len(runner.calls) == calls


def test_verify_dax_fails_and_unmounts_when_the_file_has_no_dax(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    """No patching: a file on this machine's disk really has no STATX_ATTR_DAX."""
    from pmemd.effects import statx_dax

    t, _ = debian
    probe = t.p("/probe")
    probe.write_text("x")
    if statx_dax(str(probe)) is not False:
        pytest.skip("this filesystem does not report STATX_ATTR_DAX at all")
    t.config(ONE_NS.replace("offset: 5G}", "offset: 5G, filesystem: {type: ext4}, mount: {path: /pmem/fast}}"))
    run_apply(t, runner)
    t.reboot("boot-2")
    FakeDevices(t.path).install(runner)
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "verify-dax"]
    assert o.result == "failed" and "does not have STATX_ATTR_DAX; pmemd unmounted it again" in o.message
    assert ("umount", str(t.p("/pmem/fast"))) in runner.calls
    assert state(t).namespaces["fast"].mount_path is None


MOUNTED_NS = ONE_NS.replace("offset: 5G}", "offset: 5G, filesystem: {type: ext4}, mount: {path: /pmem/fast}}")


def test_the_mount_path_is_recorded_before_mount_runs_and_taken_back_if_it_fails(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    """A pmemd killed between mount and verify-dax must find the mount recorded as its own."""
    t, _ = debian
    t.config(MOUNTED_NS)
    run_apply(t, runner)
    t.reboot("boot-2")
    devices = FakeDevices(t.path)
    recorded_at_mount: list[str | None] = []

    def failing_mount(argv: tuple[str, ...]) -> tuple[int, str, str]:
        recorded_at_mount.append(state(t).namespaces["fast"].mount_path)
        return 32, "", "mount: /pmem/fast: wrong fs type, bad option, bad superblock on /dev/pmem0"

    devices.mount = failing_mount  # type: ignore[method-assign]
    devices.install(runner)
    passes = run_apply(t, runner)
    assert recorded_at_mount == ["/pmem/fast"]
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "mount"]
    assert o.result == "failed" and "the kernel refused the DAX mount (see `dmesg | tail`)" in o.message
    assert state(t).namespaces["fast"].mount_path is None  # nothing is mounted, nothing is claimed


def test_an_unfinished_mkfs_is_made_again_with_the_same_uuid(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    """Killed during mkfs: the state names an unfinished UUID that is on the device. The redo
    wipes it and reuses the UUID, so a second kill before the new mkfs leaves the same situation."""
    from dataclasses import replace

    from pmemd import state as st

    t, _ = debian
    t.config(MOUNTED_NS)
    run_apply(t, runner)
    t.reboot("boot-2")
    devices = FakeDevices(t.path)
    unfinished = "5c1b0b6e-0000-4000-8000-00000000beef"
    devices.signatures[devices.dev("pmem0")] = {"UUID": unfinished, "TYPE": "ext4"}
    owned = state(t)
    fs = st.OwnedFs(unfinished, "ext4", complete=False)
    t.write(st.STATE_FILE, st.dumps(owned.with_namespace("fast", replace(owned.namespaces["fast"], filesystem=fs))))
    devices.install(runner)
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "mkfs"]
    assert o.result == "ok" and "did not finish" in o.action.summary
    assert ("wipefs", "-a", devices.dev("pmem0")) in runner.calls
    assert devices.mkfs_uuids == [unfinished]
    assert state(t).namespaces["fast"].filesystem == st.OwnedFs(unfinished, "ext4", complete=True)


def test_a_read_only_mount_is_verified_from_mountinfo_without_a_probe_file(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner) -> None:
    t, _ = debian
    t.config(MOUNTED_NS.replace("mount: {path: /pmem/fast}", "mount: {path: /pmem/fast, options: [ro]}"))
    run_apply(t, runner)
    t.reboot("boot-2")
    devices = FakeDevices(t.path)
    plain_mount = devices.mount

    def ro_mount(argv: tuple[str, ...]) -> tuple[int, str, str]:
        rc = plain_mount(argv)
        mi = t.p("/proc/self/mountinfo")
        mi.write_text(mi.read_text().replace(" rw,relatime ", " ro,relatime "))
        return rc

    devices.mount = ro_mount  # type: ignore[method-assign]
    devices.install(runner)
    passes = run_apply(t, runner)
    (o,) = [o for p in passes for o in p.outcomes if o.action.kind.value == "verify-dax"]
    assert o.result == "ok" and o.message == "DAX verified on /pmem/fast from mountinfo (read-only: no probe file)"
    assert ("mount", "-t", "ext4", "-o", "dax=always,ro", devices.dev("pmem0"), str(t.p("/pmem/fast"))) in runner.calls
    assert not t.exists("/pmem/fast/.pmemd-dax-probe")


def test_foreign_data_after_the_reboot_is_not_formatted(debian: tuple[HostTree, FakeUpdateGrub],
                                                        runner: RecordingRunner,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    t, _ = debian
    t.config(ONE_NS.replace("offset: 5G}", "offset: 5G, filesystem: {type: ext4}}"))
    run_apply(t, runner)
    t.reboot("boot-2")
    devices = FakeDevices(t.path)
    devices.signatures[devices.dev("pmem0")] = {"UUID": "dead-beef", "TYPE": "xfs"}
    devices.install(runner)
    rc, _, err = cli_run(t, runner, monkeypatch, capsys, "apply")
    assert rc == 1 and "/dev/pmem0 holds data pmemd did not write (xfs (UUID=dead-beef))" in err
    assert devices.mkfs_calls == []
    t.config(ONE_NS.replace("offset: 5G}", "offset: 5G, filesystem: {type: ext4}, on_foreign_data: wipe}"))
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "apply")
    assert rc == 0, out
    assert ("wipefs", "-a", devices.dev("pmem0")) in runner.calls
    assert devices.mkfs_calls[0][0] == "mkfs.ext4"


def test_fixture_trees_are_never_modified() -> None:
    """Every apply above ran on copies; the checked-in trees must still be pristine."""
    for name in ("fedora-bls-grubby", "rhel8-bls-kernelopts", "systemd-boot", "debian-grub-foreign-memmap"):
        tree = FIXTURES / name
        assert not (tree / "var").exists() and not (tree / "run").exists(), name
        assert not list(tree.rglob("*~pmemd")), name
    assert os.path.exists(FIXTURES / "debian13-qemu-plain" / "SHA256SUMS")


def test_dry_run_lists_the_reboot_required_pkgs_append(debian: tuple[HostTree, FakeUpdateGrub],
                                                       runner: RecordingRunner) -> None:
    t, _ = debian
    passes = run_apply(t, runner, dry_run=True)
    assert any("/run/reboot-required.pkgs" in e for e in passes[0].side_effects), passes[0].side_effects


def test_a_failed_boot_config_write_leaves_no_claimed_tokens(debian: tuple[HostTree, FakeUpdateGrub],
                                                             runner: RecordingRunner) -> None:
    t, fake = debian
    fake.returncode = 1
    passes = run_apply(t, runner)
    assert outcomes(passes)[0] == ("set-kernel-args", "failed")
    assert not t.exists("/etc/default/grub.d/99-pmemd.cfg")
    assert state(t).kernel_args == ()


def test_the_fake_grubby_follows_the_real_ones_measured_behaviour(tmp_path: Path) -> None:
    """What the real grubby-bls script did when run on a Debian 12 host (docs/facts.md, "grubby")."""
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    grubby = FakeGrubby(t.path)
    confs = sorted(t.p("/boot/loader/entries").glob("*.conf"), key=lambda p: p.name, reverse=True)

    def memmaps(conf: Path) -> list[str]:
        line = next(ln for ln in conf.read_text().splitlines() if ln.startswith("options "))
        return [a for a in line.split() if a.startswith("memmap=")]

    def run(*args: str) -> None:
        assert grubby(("grubby", *args))[0] == 0

    t.p("/etc/kernel/cmdline").unlink(missing_ok=True)
    run("--update-kernel=ALL", "--args=memmap=1G!4G")
    assert all(memmaps(c) == ["memmap=1G!4G"] for c in confs)
    assert "memmap=1G!4G" in t.read("/etc/kernel/cmdline")  # created from the entry
    assert "memmap=1G!4G" in t.read("/etc/default/grub")
    run("--update-kernel=ALL", "--args", "memmap=512M!6G")  # a new memmap= replaces every memmap=
    assert all(memmaps(c) == ["memmap=512M!6G"] for c in confs)
    run("--update-kernel=ALL", "--args=memmap=1G!4G memmap=512M!6G")  # both in one call: both stay
    assert all(memmaps(c) == ["memmap=1G!4G", "memmap=512M!6G"] for c in confs)
    run("--update-kernel=ALL", "--remove-args=memmap=1G!4G")  # an exact value: that token only
    assert all(memmaps(c) == ["memmap=512M!6G"] for c in confs)
    run("--update-kernel=DEFAULT", "--args=memmap=64M$3G")  # DEFAULT: one entry; $ verbatim
    assert memmaps(confs[0]) == ["memmap=64M$3G"] and memmaps(confs[1]) == ["memmap=512M!6G"]
    assert "memmap=64M$3G" not in t.read("/etc/kernel/cmdline")
    run("--update-kernel=ALL", "--remove-args=memmap")  # a bare key: all of them
    assert all(memmaps(c) == [] for c in confs)


# --- pmemd reset (package removal) ---------------------------------------------------------------


def pmem_mounts(t: HostTree) -> list[str]:
    return [ln for ln in t.read("/proc/self/mountinfo").splitlines() if "/dev/pmem" in ln]


def test_reset_leaves_nothing_of_pmemd_in_the_boot_config(
        debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The full cycle, then reset: drop-in gone (and its backup), grub.cfg without the tokens, the
    mounts undone, the reboot flag cleared; the config itself is not needed (it is removed)."""
    t, update_grub = debian
    before_cfg = t.read("/boot/grub/grub.cfg")
    converge(t, runner, monkeypatch)
    assert t.exists("/etc/default/grub.d/99-pmemd.cfg") and len(pmem_mounts(t)) == 2
    t.config("version: 1\nnamespaces: {}\n")  # a broken or removed config does not matter
    t.p("/etc/pmem.yaml").unlink()
    t.write("/run/reboot-required", "")
    t.write("/run/reboot-required.pkgs", "pmemd\n")
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "reset")
    assert rc == 0, out
    assert "memory reserved by the running kernel is given back at the next reboot" in out
    assert not list(t.p("/etc/default/grub.d").glob("*pmemd*"))  # no drop-in, no backup
    assert t.read("/boot/grub/grub.cfg") == before_cfg and update_grub.runs == 2
    assert pmem_mounts(t) == []
    assert not t.exists("/run/reboot-required") and not t.exists("/run/reboot-required.pkgs")
    owned = state(t)
    assert owned.kernel_args == () and owned.namespaces == {} and owned.pending_reboot is None
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "reset")
    assert rc == 0 and "nothing to undo" in out


@pytest.mark.parametrize("fixture", ["fedora-bls-grubby", "systemd-boot"])
def test_reset_on_the_bls_layouts_gives_the_files_back(tmp_path: Path, runner: RecordingRunner, fixture: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    t = copy_fixture(fixture, tmp_path / "host")
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "grubby", REST), handler=FakeGrubby(t.path))
    watched = [p for p in (*t.p("/boot/loader/entries").glob("*.conf"), *t.p("/efi/loader/entries").glob("*.conf"),
                           t.p("/etc/kernel/cmdline")) if p.exists()]
    before = {p: p.read_text() for p in watched}
    run_apply(t, runner)
    assert any(p.read_text() != text for p, text in before.items())
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "reset")
    assert rc == 0, out
    for p, text in before.items():
        assert p.read_text().split() == text.split(), p  # the same arguments again
    assert not [p for p in t.path.rglob("*~pmemd")]
    assert state(t).kernel_args == ()


def test_reset_keeps_a_busy_mount_and_says_so(debian: tuple[HostTree, FakeUpdateGrub], runner: RecordingRunner,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    t, _ = debian
    converge(t, runner, monkeypatch)
    runner.rules.insert(0, Rule(("umount", str(t.p("/pmem/fast"))), None, 32, "",
                                "umount: /pmem/fast: target is busy.", None))  # someone's shell is in it
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "reset")
    assert rc == 1
    assert "[failed] fast: unmount /pmem/fast" in out and "still in use" in out
    assert not t.exists("/etc/default/grub.d/99-pmemd.cfg")  # the boot config is clean all the same
    assert set(state(t).namespaces) == {"fast"}  # still pmemd's: a later reset can unmount it

"""Tier 2: trial boots through the whole executor on copies of real host trees, GRUB and
systemd-boot, with the deny-by-default RecordingRunner.

The boot loaders cannot run here; what stands in for them, and how closely:
- ``FakeUpdateGrub`` (tests/helpers.py) runs pmemd's real /etc/grub.d/01_pmemd with /bin/sh and
  puts its output into grub.cfg after 00_header's section, as grub-mkconfig does;
  ``FakeGrubEditenv`` edits the grubenv block like grub-editenv.
- ``grub_boot`` below evaluates what GRUB does with that grub.cfg at boot: the first top-level
  ``set pmemd_args=`` and the try / trying / failed state machine of 01_pmemd, with save_env
  writing grubenv. That is the behaviour measured on the real GRUB (docs: BOOT-LAYOUTS.md §5)
  and proven in tests/e2e/test_trial_cycle.py on a real GRUB and a real systemd-boot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    REST,
    FakeDevices,
    FakeGrub2Env,
    FakeGrubby,
    FakeGrubEditenv,
    FakeUpdateGrub,
    HostTree,
    RecordingRunner,
    copy_fixture,
    in_root,
)
from test_apply_tree import EXAMPLE, TOKENS, cli_run, outcomes, run_apply, state

import pmemd.effects
from pmemd.bootloader.grub import DROPIN, SLOT, TRIAL_SCRIPT, render_dropin
from pmemd.bootloader.syntax import parse_bls_entry
from pmemd.trial import MARKER, TrialState

pytestmark = pytest.mark.usefixtures("no_journal")

TRIAL_ARGS = (*TOKENS, "panic=10", MARKER)
FAST_ONLY = "version: 1\nsettings: {kaslr: keep}\nnamespaces:\n  fast: {size: 1G, offset: 5G}\n"


@pytest.fixture
def grub(tmp_path: Path, runner: RecordingRunner) -> tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv]:
    """debian13-qemu-plain with grub-editenv installed, the example config, the fakes wired in."""
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.write("/usr/bin/grub-editenv", "", mode=0o755)
    t.config(EXAMPLE)
    t.boot_id("boot-1")
    update, editenv = FakeUpdateGrub(t.path), FakeGrubEditenv(t.path)
    runner.expect(*in_root(t.path, "update-grub"), handler=update)
    runner.expect(*in_root(t.path, "grub-editenv", REST), handler=editenv)
    return t, update, editenv


def grubenv(t: HostTree) -> dict[str, str]:
    text = t.read("/boot/grub/grubenv") if t.exists("/boot/grub/grubenv") else ""
    return dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#"))


def grub_boot(t: HostTree, boot_id: str) -> tuple[str, ...]:
    """Boot the default entry the way GRUB evaluates pmemd's pieces of grub.cfg (see above)."""
    cfg = t.read("/boot/grub/grub.cfg")
    env = grubenv(t)
    sets = re.findall(r'^set pmemd_args="([^"$]*)"', cfg, re.M)
    slot_value = sets[0] if sets else ""
    if "pmemd_state" in cfg:  # 01_pmemd's state machine
        if env.get("pmemd_state") == "try":
            FakeGrubEditenv(t.path)(("grub-editenv", "/boot/grub/grubenv", "set", "pmemd_state=trying"))
            slot_value = env.get("pmemd_try_args", "")
        elif env.get("pmemd_state") == "trying":
            FakeGrubEditenv(t.path)(("grub-editenv", "/boot/grub/grubenv", "set", "pmemd_state=failed"))
    linux = next(ln for ln in cfg.splitlines() if ln.strip().startswith("linux"))
    args = [a for w in linux.split()[2:] for a in (slot_value.split() if w == SLOT else [w])]
    return t.reboot(boot_id, args)


def test_grub_arms_a_trial_without_touching_the_default(grub: tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv],
                                                       runner: RecordingRunner) -> None:
    t, update, _ = grub
    assert outcomes(run_apply(t, runner)) == [("arm-trial", "ok"), ("reboot", "ok")]
    assert update.runs == 1
    assert t.read(DROPIN).splitlines()[-1] == 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX \\${pmemd_args}"'
    assert t.p(TRIAL_SCRIPT).stat().st_mode & 0o111  # grub-mkconfig runs only executable scripts
    assert grubenv(t) == {"pmemd_state": "try", "pmemd_try_args": " ".join(TRIAL_ARGS)}
    cfg = t.read("/boot/grub/grub.cfg")
    assert 'set pmemd_args=""' in cfg and all(SLOT in ln for ln in cfg.splitlines() if ln.strip().startswith("linux"))
    owned = state(t)
    assert owned.trial.state is TrialState.PENDING and owned.trial.tokens == TOKENS and owned.trial.boot_id == "boot-1"
    assert outcomes(run_apply(t, runner)) == []  # armed: nothing more to do until the reboot


def test_grub_trial_boot_commits_and_the_next_boot_has_the_tokens_without_the_marker(
        grub: tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv], runner: RecordingRunner,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    t, _, _ = grub
    run_apply(t, runner)
    booted = grub_boot(t, "boot-2")
    assert [a for a in booted if a in TRIAL_ARGS] == list(TRIAL_ARGS)
    FakeDevices(t.path).install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    done = outcomes(run_apply(t, runner))
    assert done[:2] == [("commit-trial", "ok"), ("clear-reboot", "ok")] and ("mount", "ok") in done
    assert t.read(DROPIN) == render_dropin(TOKENS)  # the plain drop-in: no trial pieces left
    assert not t.exists(TRIAL_SCRIPT)
    assert not t.p(TRIAL_SCRIPT + "~pmemd").stat().st_mode & 0o111  # its backup: grub-mkconfig must skip it
    assert "pmemd_state" not in grubenv(t) and "pmemd_args" not in t.read("/boot/grub/grub.cfg")
    owned = state(t)
    assert (owned.trial.state, owned.trial.committed, owned.trial.previous) == (TrialState.COMMITTED, TOKENS, ())
    assert owned.kernel_args == TOKENS
    rc, out, _ = cli_run(t, runner, monkeypatch, capsys, "status", "--json")
    assert rc == 0 and json.loads(out)["trial"]["state"] == "committed"
    after = grub_boot(t, "boot-3")
    assert MARKER not in after and [a for a in after if a in TOKENS] == list(TOKENS)


def test_grub_crashed_trial_falls_back_fails_and_is_not_armed_again(
        grub: tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv], runner: RecordingRunner,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    t, _, _ = grub
    run_apply(t, runner)
    assert MARKER in grub_boot(t, "boot-2")  # the trial boot ... crashes before pmemd runs
    assert grubenv(t)["pmemd_state"] == "trying"
    fallback = grub_boot(t, "boot-3")  # GRUB finds "trying": failed, the committed arguments
    assert MARKER not in fallback and not [a for a in fallback if a in TOKENS]
    assert grubenv(t)["pmemd_state"] == "failed"
    assert outcomes(run_apply(t, runner))[0] == ("fail-trial", "ok")
    owned = state(t)
    assert owned.trial.state is TrialState.FAILED and "did not reach verification" in owned.trial.reason
    assert not t.exists(TRIAL_SCRIPT) and "pmemd_state" not in grubenv(t) and not t.exists(DROPIN)
    assert outcomes(run_apply(t, runner)) == []  # not armed again by itself
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "status")
    assert out.startswith("trial boot failed: the trial boot did not reach verification"), out
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "apply", "--retry-trial")
    assert rc == 0 and "[ok] arm a trial boot" in out, out + err
    assert grubenv(t)["pmemd_state"] == "try"


def test_grub_a_failing_grub_editenv_leaves_the_old_boot_config(
        grub: tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv], runner: RecordingRunner) -> None:
    t, update, editenv = grub
    before = t.read("/boot/grub/grub.cfg")
    editenv.returncode = 1
    ((kind, result),) = outcomes(run_apply(t, runner))[:1]
    assert (kind, result) == ("arm-trial", "failed")
    assert not t.exists(DROPIN) and not t.exists(TRIAL_SCRIPT)
    assert state(t).kernel_args == () and state(t).trial.state is TrialState.NONE
    assert update.runs == 1 and t.read("/boot/grub/grub.cfg") != before  # what update-grub made ...
    update(("update-grub",))  # ... is made again from the restored files by the next change
    assert t.read("/boot/grub/grub.cfg") == before


def test_grub_rollback_after_a_commit(grub: tuple[HostTree, FakeUpdateGrub, FakeGrubEditenv],
                                      runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    t, _, _ = grub
    t.config(FAST_ONLY)
    run_apply(t, runner)
    grub_boot(t, "boot-2")
    FakeDevices(t.path).install(runner)
    run_apply(t, runner)  # committed: memmap=1G!5G
    t.config(EXAMPLE)
    run_apply(t, runner)
    grub_boot(t, "boot-3")
    run_apply(t, runner)  # committed: both
    assert state(t).trial.previous == ("memmap=1G!5G",)
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "rollback")
    assert rc == 0, err
    assert "[ok] roll back the boot config" in out
    assert t.read(DROPIN) == render_dropin(("memmap=1G!5G",))
    back = grub_boot(t, "boot-4")
    assert "memmap=1G!5G" in back and "memmap=512M!4G" not in back and MARKER not in back
    assert not [k for k, _ in outcomes(run_apply(t, runner)) if k in ("arm-trial", "set-kernel-args")]
    rc, out, err = cli_run(t, runner, monkeypatch, capsys, "rollback")
    assert rc == 1 and "no committed trial to roll back" in err


# --- systemd-boot -------------------------------------------------------------------------------


def test_systemd_boot_trial_entry_one_shot_then_commit(tmp_path: Path, runner: RecordingRunner,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    t = copy_fixture("systemd-boot", tmp_path / "host")
    t.write("/usr/bin/bootctl", "", mode=0o755)
    (t.p("/sys/firmware/efi/efivars")).mkdir(parents=True, exist_ok=True)
    t.config(EXAMPLE)
    t.boot_id("boot-1")
    runner.expect(*in_root(t.path, "bootctl", "set-oneshot", "pmemd-trial.conf"))
    entries = {e.name: e.read_text() for e in t.p("/efi/loader/entries").glob("*.conf")}
    assert outcomes(run_apply(t, runner)) == [("arm-trial", "ok"), ("reboot", "ok")]
    assert {e.name: e.read_text() for e in t.p("/efi/loader/entries").glob("*.conf") if e.name in entries} == entries
    trial = parse_bls_entry(t.read("/efi/loader/entries/pmemd-trial.conf"))
    assert tuple(trial["options"].split()[-len(TRIAL_ARGS):]) == TRIAL_ARGS and "sort-key" not in trial
    t.reboot("boot-2", trial["options"].split())  # systemd-boot boots the one-shot entry
    FakeDevices(t.path).install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    assert outcomes(run_apply(t, runner))[0] == ("commit-trial", "ok")
    assert not t.exists("/efi/loader/entries/pmemd-trial.conf")
    for name in entries:
        assert tuple(parse_bls_entry(t.read(f"/efi/loader/entries/{name}"))["options"].split()[-3:]) == TOKENS
    assert tuple(t.read("/etc/kernel/cmdline").split()[-3:]) == TOKENS


# --- grubby (Fedora/RHEL BLS) -------------------------------------------------------------------


@pytest.fixture
def fedora(tmp_path: Path, runner: RecordingRunner) -> HostTree:
    """fedora-bls-grubby (/boot is ext4, GRUB_DEFAULT=saved) with grub2-tools, the fakes wired in."""
    t = copy_fixture("fedora-bls-grubby", tmp_path / "host")
    for tool in ("grub2-reboot", "grub2-set-default", "grub2-editenv"):
        t.write(f"/usr/sbin/{tool}", "", mode=0o755)
    t.config(EXAMPLE)
    t.boot_id("boot-1")
    runner.expect(*in_root(t.path, "grubby", REST), handler=FakeGrubby(t.path))
    env = FakeGrub2Env(t.path)
    for tool in ("grub2-reboot", "grub2-set-default", "grub2-editenv"):
        runner.expect(*in_root(t.path, tool, REST), handler=env)
    return t


def bls_boot(t: HostTree, boot_id: str) -> tuple[str, ...]:
    """Boot as Fedora's GRUB does with BLS entries: ``next_entry`` once (00_header clears it in
    grubenv before it boots), else ``saved_entry`` (GRUB_DEFAULT=saved)."""
    env = dict(ln.split("=", 1) for ln in t.read("/boot/grub2/grubenv").splitlines() if "=" in ln and ln[0] != "#")
    chosen = env.get("next_entry") or env["saved_entry"]
    if env.get("next_entry"):
        FakeGrub2Env(t.path)(("grub2-editenv", "-", "unset", "next_entry"))
    entry = parse_bls_entry(t.read(f"/boot/loader/entries/{chosen}.conf"))
    return t.reboot(boot_id, entry["options"].split())


def test_grubby_trial_entry_once_then_commit(fedora: HostTree, runner: RecordingRunner,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    t = fedora
    default_id = "4c1f0e2a9b7d4e5f8a6b3c2d1e0f9a8b-6.8.9-300.fc40.x86_64"
    entries = {e.name: e.read_text() for e in t.p("/boot/loader/entries").glob("*.conf")}
    assert outcomes(run_apply(t, runner)) == [("arm-trial", "ok"), ("reboot", "ok")]
    assert {e.name: e.read_text() for e in t.p("/boot/loader/entries").glob("*.conf") if e.name in entries} == entries
    trial = parse_bls_entry(t.read("/boot/loader/entries/pmemd-trial.conf"))
    assert tuple(trial["options"].split()[-len(TRIAL_ARGS):]) == TRIAL_ARGS
    assert trial["linux"] == "/vmlinuz-6.8.9-300.fc40.x86_64"  # a copy of the default entry
    env = t.read("/boot/grub2/grubenv")
    assert f"saved_entry={default_id}" in env and "next_entry=pmemd-trial" in env  # the default pinned
    booted = bls_boot(t, "boot-2")  # the one-shot
    assert MARKER in booted and "next_entry" not in t.read("/boot/grub2/grubenv")
    FakeDevices(t.path).install(runner)
    monkeypatch.setattr(pmemd.effects, "statx_dax", lambda path: True)
    assert outcomes(run_apply(t, runner))[0] == ("commit-trial", "ok")
    assert not t.exists("/boot/loader/entries/pmemd-trial.conf")
    for name in entries:
        if "rescue" not in name:
            assert tuple(parse_bls_entry(t.read(f"/boot/loader/entries/{name}"))["options"].split()[-3:]) == TOKENS
    after = bls_boot(t, "boot-3")
    assert MARKER not in after and [a for a in after if a in TOKENS] == list(TOKENS)


def test_grubby_crashed_trial_boots_the_pinned_default_and_fails(fedora: HostTree, runner: RecordingRunner) -> None:
    t = fedora
    run_apply(t, runner)
    assert MARKER in bls_boot(t, "boot-2")  # ... crashes before pmemd runs
    fallback = bls_boot(t, "boot-3")  # next_entry was cleared: the pinned default
    assert MARKER not in fallback and not [a for a in fallback if a in TOKENS]
    assert outcomes(run_apply(t, runner))[0] == ("fail-trial", "ok")
    assert not t.exists("/boot/loader/entries/pmemd-trial.conf")
    assert state(t).trial.state is TrialState.FAILED


@pytest.mark.parametrize(("change", "why"), [
    (lambda t: t.write("/etc/default/grub", t.read("/etc/default/grub").replace("GRUB_DEFAULT=saved",
                                                                                  "GRUB_DEFAULT=0")),
     "GRUB_DEFAULT is not saved"),
    (lambda t: t.p("/usr/sbin/grub2-reboot").unlink(), "grub2-reboot and grub2-set-default"),
])
def test_grubby_without_a_safe_one_shot_writes_the_default(fedora: HostTree, runner: RecordingRunner,
                                                          change: Any, why: str) -> None:
    change(fedora)
    passes = run_apply(fedora, runner)
    assert outcomes(passes) == [("set-kernel-args", "ok"), ("reboot", "ok")]
    assert why in passes[0].plan.trial

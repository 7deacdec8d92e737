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

import pytest
from helpers import (
    REST,
    FakeDevices,
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

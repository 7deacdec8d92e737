"""The trial-boot state machine: every transition, the refusals, the trial command line and
which layouts can fall back by themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pmemd import state as st
from pmemd.bootloader import grub, sdboot
from pmemd.bootloader.syntax import parse_bls_entry, parse_grub_cfg
from pmemd.model import TrialBoot
from pmemd.trial import (
    MARKER,
    Observed,
    Step,
    Trial,
    TrialState,
    advance,
    decide,
    grubenv_support,
    may_arm,
    trial_cmdline,
)

NEW = ("memmap=2G!4G",)
OLD = ("memmap=1G!4G",)
ARMED = Trial(TrialState.PENDING, tokens=NEW, committed=OLD, since="t0", boot_id="boot-a")
TRIAL_CMDLINE = ("root=/dev/vda1", "ro", *NEW, "panic=10", MARKER)
DEFAULT_CMDLINE = ("root=/dev/vda1", "ro", *OLD)


def test_pending_stays_pending_in_the_boot_that_armed_it() -> None:
    assert advance(ARMED, Observed("boot-a", DEFAULT_CMDLINE, None), now="t1") == (ARMED, Step.NOTHING)


def test_trial_boot_is_running_until_verification_finishes() -> None:
    trial, step = advance(ARMED, Observed("boot-b", TRIAL_CMDLINE, None), now="t1")
    assert (trial.state, trial.trial_boot_id, trial.since, step) == (TrialState.RUNNING, "boot-b", "t1", Step.RECORD)
    assert advance(trial, Observed("boot-b", TRIAL_CMDLINE, None), now="t2") == (trial, Step.RECORD)


def test_verified_trial_boot_commits_its_tokens() -> None:
    trial, step = advance(ARMED, Observed("boot-b", TRIAL_CMDLINE, True), now="t1")
    assert step is Step.COMMIT
    assert (trial.state, trial.committed, trial.tokens) == (TrialState.COMMITTED, NEW, NEW)


def test_failed_verification_is_not_committed() -> None:
    trial, step = advance(ARMED, Observed("boot-b", TRIAL_CMDLINE, False, ("pm0: no /dev/pmem0",)), now="t1")
    assert step is Step.DISARM
    assert trial.state is TrialState.FAILED and trial.committed == OLD
    assert "pm0: no /dev/pmem0" in trial.reason


def test_a_boot_without_the_marker_after_arming_is_a_failed_trial() -> None:
    trial, step = advance(ARMED, Observed("boot-b", DEFAULT_CMDLINE, True), now="t1")
    assert (trial.state, step) == (TrialState.FAILED, Step.DISARM)
    assert "did not reach verification" in trial.reason and trial.committed == OLD


def test_a_trial_boot_that_ended_before_verification_is_failed_in_the_next_boot() -> None:
    running, _ = advance(ARMED, Observed("boot-b", TRIAL_CMDLINE, None), now="t1")
    trial, step = advance(running, Observed("boot-c", DEFAULT_CMDLINE, None), now="t2")
    assert (trial.state, step) == (TrialState.FAILED, Step.DISARM)
    assert "ended before its verification" in trial.reason


@pytest.mark.parametrize("state", [TrialState.NONE, TrialState.COMMITTED, TrialState.FAILED])
def test_settled_states_do_not_move(state: TrialState) -> None:
    trial = Trial(state, tokens=NEW, committed=OLD, boot_id="boot-a")
    assert advance(trial, Observed("boot-z", TRIAL_CMDLINE, True), now="t9") == (trial, Step.NOTHING)


def test_a_failed_trial_is_not_armed_again_without_retry() -> None:
    failed = Trial(TrialState.FAILED, tokens=NEW, committed=OLD, reason="the trial boot did not reach verification")
    ok, why = may_arm(failed, NEW, retry=False)
    assert not ok and "--retry-trial" in why and "did not reach verification" in why
    assert may_arm(failed, NEW, retry=True) == (True, "")
    assert may_arm(failed, ("memmap=3G!4G",), retry=False) == (True, "")  # a changed config


def test_the_same_trial_is_not_armed_twice() -> None:
    ok, why = may_arm(ARMED, NEW, retry=False)
    assert not ok and "already pending" in why


def test_trial_cmdline_replaces_pmemds_tokens_and_adds_panic_and_marker() -> None:
    args = trial_cmdline(("root=/dev/vda1", "ro", "panic=-1", *OLD, "quiet"), committed=OLD, tokens=NEW)
    assert args == ("root=/dev/vda1", "ro", "quiet", *NEW, "panic=10", MARKER)
    assert trial_cmdline(args, committed=OLD, tokens=NEW) == args  # idempotent


@pytest.mark.parametrize(("abstractions", "fs", "version", "ok"), [
    ((), "ext2", (2, 12), True),
    (("lvm",), "ext2", (2, 12), False),
    (("diskfilter", "mdraid1x"), "ext2", (2, 12), False),
    ((), "zfs", (2, 14), False),
    ((), "btrfs", (2, 12), False),
    ((), "btrfs", (2, 14), True),
])
def test_grub_support_follows_where_grubenv_lives(abstractions: tuple[str, ...], fs: str,
                                                  version: tuple[int, ...], ok: bool) -> None:
    sup = grubenv_support(abstractions=abstractions, fs=fs, grub_version=version)
    assert sup.ok is ok
    if not ok:
        assert "cannot write its grubenv" in sup.reason


def test_decide_by_mode() -> None:
    assert decide(TrialBoot.AUTO, True, "fine") == (True, None)
    assert decide(TrialBoot.AUTO, False, "/boot/grub is on lvm") == (False, None)
    assert decide(TrialBoot.NEVER, True, "fine") == (False, None)
    assert decide(TrialBoot.ALWAYS, True, "fine") == (True, None)
    trial, error = decide(TrialBoot.ALWAYS, False, "/boot/grub is on lvm")
    assert not trial and error is not None and "/boot/grub is on lvm" in error and "trial_boot" in error


def test_the_trial_survives_the_state_file() -> None:
    owned = st.Owned(kernel_args=OLD, trial=ARMED)
    assert st.loads(st.dumps(owned)) == owned
    assert st.loads(st.dumps(st.Owned())).trial == Trial()
    assert st.loads('{"version": 1}').trial.state is TrialState.NONE


def test_a_damaged_trial_record_is_a_state_error() -> None:
    with pytest.raises(st.StateError, match="damaged"):
        st.loads('{"trial": {"state": "maybe"}}')


FIXTURE = Path(__file__).parent / "fixtures/hosts/systemd-boot/efi/loader/entries"


def test_systemd_boot_trial_entry_copies_the_default_with_the_trial_arguments() -> None:
    text = (FIXTURE / "3f1c6a0e5b2d4c8e9a7b1d2e3f405162-6.12.57+deb13-amd64.conf").read_text()
    committed_text = sdboot.edit_options(text, OLD, ())
    entry = parse_bls_entry(sdboot.trial_entry(committed_text, committed=OLD, tokens=NEW))
    original = parse_bls_entry(committed_text)
    assert entry["options"].split() == ["root=UUID=c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", "ro", "quiet", *NEW,
                                        "panic=10", MARKER]
    assert (entry["linux"], entry["initrd"]) == (original["linux"], original["initrd"])
    assert entry["title"] == "Debian GNU/Linux 13 (trixie) (pmemd trial)"
    assert "sort-key" not in entry  # sorts after the kernel-install entries


@pytest.mark.parametrize(("default", "picked"), [
    ("3f1c6a0e5b2d4c8e9a7b1d2e3f405162-*", False), (None, False), ("*", True), ("pmemd-*", True),
    ("pmemd-trial.conf", True)])
def test_the_trial_entry_is_never_the_default(default: str | None, picked: bool) -> None:
    assert sdboot.trial_may_become_default(default) is picked


def _generated(script: str, tmp_path: Path) -> str:
    """What update-grub would put into grub.cfg for the script: its output, run by /bin/sh."""
    path = tmp_path / "01_pmemd"
    path.write_text(script)
    return subprocess.run(["/bin/sh", str(path)], check=True, capture_output=True, text=True).stdout


def test_grub_trial_script_sets_the_committed_tokens_and_the_state_machine(tmp_path: Path) -> None:
    out = _generated(grub.render_trial_script(OLD), tmp_path)
    assert out.splitlines()[0] == 'set pmemd_args="memmap=1G!4G"'
    assert 'set pmemd_args="${pmemd_try_args}"' in out and "save_env pmemd_state" in out
    cfg = out + ("menuentry 'Debian GNU/Linux' --class debian {\n"
                 "\tlinux /boot/vmlinuz-6.12 root=UUID=x ro quiet ${pmemd_args}\n}\n")
    (entry,) = grub.expand_slot(parse_grub_cfg("/boot/grub/grub.cfg", cfg), cfg)
    assert entry.args == ("root=UUID=x", "ro", "quiet", *OLD) and entry.default


def test_grub_arming_is_one_grubenv_write_with_the_trial_tokens() -> None:
    argv = grub.arm_argv("/boot/grub/grubenv", (*NEW, "panic=10", MARKER))
    assert argv == ["grub-editenv", "/boot/grub/grubenv", "set", "pmemd_state=try",
                    f"pmemd_try_args=memmap=2G!4G panic=10 {MARKER}"]


@pytest.mark.parametrize("bad", ["memmap=64M$3G", 'a"b', "x;reboot"])
def test_grub_trial_pieces_refuse_unsafe_tokens(bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        grub.render_trial_script((bad,))
    with pytest.raises(ValueError, match="unsafe"):
        grub.arm_argv("/boot/grub/grubenv", (bad,))


def test_systemd_boot_trial_entry_keeps_every_initrd_line() -> None:
    text = ("title Debian\nsort-key debian\noptions root=/dev/vda1 ro\noptions quiet memmap=1G!4G\n"
            "linux /id/6.12/linux\ninitrd /id/6.12/intel-ucode.img\ninitrd /id/6.12/initrd.img\n")
    lines = sdboot.trial_entry(text, committed=OLD, tokens=NEW).splitlines()
    assert [ln for ln in lines if ln.startswith("initrd")] == ["initrd /id/6.12/intel-ucode.img",
                                                              "initrd /id/6.12/initrd.img"]
    options = [ln for ln in lines if ln.startswith("options")]
    assert options == [f"options root=/dev/vda1 ro quiet {NEW[0]} panic=10 {MARKER}"]

"""Tier 1: trial boots in the planner, ``(config, facts, owned) -> Plan``, as tables: arming,
commit, failure, the sticky refusal, --retry-trial, settings.trial_boot, rollback, and what the
reboot gate and the status line say in each case."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import GIB, config, make_facts
from test_plan import FAST, OWNED, TOK, booted, kinds, legacy, nth, region

from pmemd.actions import ArmTrial, CommitTrial, EndTrial, FailTrial, Reboot, SetKernelArgs, to_json
from pmemd.facts import HostFacts, Signature
from pmemd.plan import Assessment, plan
from pmemd.plan_boot import rollback_plan
from pmemd.report import plan_json, status_json, summary_line
from pmemd.state import Owned, OwnedNamespace, PendingReboot
from pmemd.trial import MARKER, Trial, TrialState

TOK2 = "memmap=512M!4G"
BULK = {"size": "512M", "offset": "4G"}
ARMED = Trial(TrialState.PENDING, tokens=(TOK2, TOK), committed=(TOK,), boot_id="boot-1")


def trial_ok(facts: HostFacts, ok: bool = True, why: str = "GRUB can write grubenv") -> HostFacts:
    return dataclasses.replace(facts, boot=dataclasses.replace(facts.boot, trial_ok=ok, trial_why=why))


def committed_host(**kw: Any) -> HostFacts:
    """Booted with fast's token, which is also the default entry's (committed)."""
    return trial_ok(booted(**kw))


def trial_boot(*, boot_id: str = "boot-2", bulk_device: bool = True) -> HostFacts:
    """The trial boot of ARMED: both tokens, panic= and the marker; the default still has TOK."""
    regions = (region(1, 4 * GIB, GIB // 2, blockdev="auto" if bulk_device else None), region(0, 5 * GIB, GIB))
    facts = make_facts(cmdline=f"root=/dev/vda1 ro {TOK2} {TOK} panic=10 {MARKER}", next_args=("root=/dev/vda1",
                       "ro", TOK), owned_tokens=(TOK,), regions=regions,
                       iomem=(legacy(4 * GIB, GIB // 2, 1), legacy(5 * GIB, GIB)), boot_id=boot_id,
                       signatures=(Signature("/dev/pmem0", True), Signature("/dev/pmem1", True)))
    return trial_ok(facts)


def owned_during_trial(trial: Trial = ARMED) -> Owned:
    return Owned(kernel_args=(TOK, TOK2), backend="grub", trial=trial,
                 namespaces={"fast": OwnedNamespace(5 * GIB, GIB), "bulk": OwnedNamespace(4 * GIB, GIB // 2)},
                 pending_reboot=PendingReboot(since="2026-12-07T10:00:00", boot_id="boot-1", reason="x",
                                              added=(TOK2,)))


def assessment(cfg: Any, facts: HostFacts, owned: Owned, **kw: Any) -> Assessment:
    loaded: Any = SimpleNamespace(config=cfg, origin=lambda *path: None)  # a config without files
    return Assessment(loaded, facts, owned, plan(cfg, facts, owned, **kw))


BOTH = config({"fast": FAST, "bulk": BULK})


# --- arming ---------------------------------------------------------------------------------


def test_a_change_on_a_layout_with_one_shot_boots_arms_a_trial_instead_of_writing_the_default() -> None:
    p = plan(BOTH, committed_host(), OWNED)
    assert kinds(p)[:2] == ["arm-trial", "reboot"]
    arm = nth(p, 0, ArmTrial)
    assert arm.trial == Trial(TrialState.PENDING, tokens=(TOK2, TOK), committed=(TOK,), boot_id="boot-1")
    assert {r.name for r in arm.ranges} == {"fast", "bulk"}
    assert "the next boot only tries memmap=512M!4G memmap=1G!5G; the default keeps memmap=1G!5G" in arm.summary
    assert nth(p, 1, Reboot).added == (TOK2,)
    assert p.trial.startswith("the next boot is a trial")
    assert json.dumps(to_json(arm))  # the trial record prints as JSON


def test_an_armed_trial_is_not_armed_again_and_the_reboot_stays_pending() -> None:
    p = plan(BOTH, committed_host(), owned_during_trial())
    assert not [a for a in p.actions if isinstance(a, ArmTrial | SetKernelArgs)]
    assert p.reboot_needed and p.trial == f"the next boot is a trial of {TOK2} {TOK}"


def test_a_config_changed_again_while_armed_arms_the_new_tokens_over_the_committed_ones() -> None:
    three = config({"fast": FAST, "bulk": BULK, "more": {"size": "256M", "offset": "7G"}})
    p = plan(three, committed_host(), owned_during_trial())
    arm = nth(p, 0, ArmTrial)
    assert arm.trial.committed == (TOK,) and "memmap=256M!7G" in arm.trial.tokens


def test_a_config_changed_back_while_armed_disarms_the_trial() -> None:
    p = plan(config({"fast": FAST}), committed_host(), owned_during_trial())
    end = nth(p, 0, EndTrial)
    assert end.disarm and end.trial.state is TrialState.NONE
    assert "ClearReboot" in [type(a).__name__ for a in p.actions]  # back to the booted state


@pytest.mark.parametrize(("mode", "ok", "kind"), [("never", True, "set-kernel-args"),
                                                 ("auto", False, "set-kernel-args"),
                                                 ("auto", True, "arm-trial"),
                                                 ("always", True, "arm-trial")])
def test_settings_trial_boot(mode: str, ok: bool, kind: str) -> None:
    p = plan(config({"fast": FAST, "bulk": BULK}, trial_boot=mode), trial_ok(booted(), ok, "grub-editenv is missing"),
             OWNED)
    assert kinds(p)[0] == kind and not p.errors
    if mode == "auto" and not ok:
        assert p.trial == "no trial boot: grub-editenv is missing"


def test_trial_boot_always_on_a_layout_without_one_shot_boots_is_an_error_that_says_why() -> None:
    p = plan(config({"fast": FAST, "bulk": BULK}, trial_boot="always"),
             trial_ok(booted(), False, "/boot/grub is on lvm: GRUB cannot write its grubenv there"), OWNED)
    (err,) = p.errors
    assert err.key == "settings.trial_boot" and "/boot/grub is on lvm" in err.message
    assert "set trial_boot: auto or never" in err.message and not p.actions


# --- the trial boot -------------------------------------------------------------------------


def test_the_verified_trial_boot_commits_then_mounts() -> None:
    p = plan(BOTH, trial_boot(), owned_during_trial())
    commit = nth(p, 0, CommitTrial)
    assert commit.trial.state is TrialState.COMMITTED and commit.trial.committed == (TOK2, TOK)
    assert commit.trial.previous == (TOK,) and commit.trial.trial_boot_id == "boot-2" and commit.remove == ()
    assert not [a for a in p.actions if isinstance(a, ArmTrial | SetKernelArgs | Reboot)]  # nothing more to boot
    assert "clear-reboot" in kinds(p) and "mkfs" in kinds(p)
    assert not p.reboot_needed


def test_a_region_that_fails_verification_fails_the_trial_and_is_not_committed() -> None:
    p = plan(BOTH, trial_boot(bulk_device=False), owned_during_trial())
    fail = nth(p, 0, FailTrial)
    assert fail.trial.state is TrialState.FAILED and fail.disarm and fail.trial.committed == (TOK,)
    assert fail.trial.reason.startswith("verification failed: bulk:")
    assert not [a for a in p.actions if isinstance(a, ArmTrial | CommitTrial | SetKernelArgs)]
    # back to the committed arguments at the next boot: the trial's extra token goes
    gate = next(a for a in p.actions if isinstance(a, Reboot))
    assert gate.removed == (TOK2,) and not gate.added
    assert [i.key for i in p.issues if i.severity == "warning"] == ["settings.trial_boot"]
    # the region is an error too; the status line leads with the trial, which says why
    after = dataclasses.replace(owned_during_trial(), trial=fail.trial, kernel_args=(TOK,))
    line = summary_line(assessment(BOTH, trial_boot(bulk_device=False), after))
    assert line.startswith("trial boot failed: verification failed: bulk:"), line


def test_a_boot_without_the_marker_after_arming_is_a_failed_trial() -> None:
    facts = committed_host(boot_id="boot-2")  # reset into the default: fast's token, no marker
    p = plan(BOTH, facts, owned_during_trial())
    fail = nth(p, 0, FailTrial)
    assert "did not reach verification" in fail.trial.reason
    a = assessment(BOTH, facts, dataclasses.replace(owned_during_trial(), trial=fail.trial, kernel_args=(TOK,)))
    assert summary_line(a).startswith("trial boot failed: the trial boot did not reach verification")


def test_the_boot_that_armed_the_trial_changes_nothing_about_it() -> None:
    p = plan(BOTH, committed_host(), owned_during_trial())
    assert not [a for a in p.actions if isinstance(a, FailTrial | CommitTrial | EndTrial)]


# --- after a failure ------------------------------------------------------------------------


FAILED = dataclasses.replace(ARMED, state=TrialState.FAILED, reason="the trial boot did not reach verification")


def test_a_failed_trial_is_not_armed_again_by_itself() -> None:
    owned = dataclasses.replace(owned_during_trial(FAILED), kernel_args=(TOK,), pending_reboot=None)
    p = plan(BOTH, committed_host(boot_id="boot-3"), owned)
    assert not [a for a in p.actions if isinstance(a, ArmTrial | SetKernelArgs | Reboot)]
    (warn,) = [i for i in p.issues if i.key == "settings.trial_boot"]
    assert "pmemd apply --retry-trial" in warn.message and not p.reboot_needed
    assert "mkfs" in kinds(p)  # the committed namespace is still looked after
    status = status_json(assessment(BOTH, committed_host(boot_id="boot-3"), owned), [])
    assert status["trial"]["state"] == "failed" and status["trial"]["tokens"] == [TOK2, TOK]
    assert status["summary"].startswith("trial boot failed: ")


def test_retry_trial_arms_it_again_and_a_changed_config_does_too() -> None:
    owned = dataclasses.replace(owned_during_trial(FAILED), kernel_args=(TOK,), pending_reboot=None)
    again = plan(BOTH, committed_host(boot_id="boot-3"), owned, retry_trial=True)
    assert nth(again, 0, ArmTrial).trial.tokens == (TOK2, TOK)
    other = config({"fast": FAST, "bulk": {"size": "256M", "offset": "4G"}})
    assert kinds(plan(other, committed_host(boot_id="boot-3"), owned))[0] == "arm-trial"


def test_plan_json_says_whether_the_next_boot_is_a_trial() -> None:
    a = assessment(BOTH, committed_host(), OWNED)
    j = plan_json(a)["trial"]
    assert j["next_boot"] is True and j["why"].startswith("the next boot is a trial") and j["state"] == "none"


# --- rollback -------------------------------------------------------------------------------


def test_rollback_after_a_commit_writes_the_previous_tokens_and_remembers_not_to_retry() -> None:
    done = Trial(TrialState.COMMITTED, tokens=(TOK2, TOK), committed=(TOK2, TOK), previous=(TOK,))
    facts = trial_ok(make_facts(cmdline=f"root=/dev/vda1 ro {TOK2} {TOK}", owned_tokens=(TOK2, TOK)))
    owned = Owned(kernel_args=(TOK2, TOK), backend="grub", trial=done)
    actions, why = rollback_plan(facts, owned)
    assert why is None
    sets, record = actions
    assert isinstance(sets, SetKernelArgs) and sets.add == (TOK,) and sets.remove == (TOK2,)
    assert isinstance(record, EndTrial) and not record.disarm
    assert (record.trial.state, record.trial.tokens, record.trial.committed) == (TrialState.FAILED, (TOK2, TOK), (TOK,))
    # after it the planner does not write the rolled-back tokens again, and flags the reboot back
    after = dataclasses.replace(owned, kernel_args=(TOK,), trial=record.trial)
    p = plan(BOTH, trial_ok(make_facts(cmdline=f"root=/dev/vda1 ro {TOK2} {TOK}", next_args=("root=/dev/vda1", "ro",
                                       TOK), owned_tokens=(TOK,))), after)
    assert not [a for a in p.actions if isinstance(a, ArmTrial | SetKernelArgs)]
    assert nth(p, 0, Reboot).removed == (TOK2,)


def test_rollback_after_a_failed_trial_keeps_the_failed_tokens_refused() -> None:
    failed = Trial(TrialState.FAILED, tokens=("memmap=256M!7G", TOK2, TOK), committed=(TOK2, TOK), previous=(TOK,),
                   reason="verification failed: spare: no device")
    facts = trial_ok(make_facts(cmdline=f"root=/dev/vda1 ro {TOK2} {TOK}", owned_tokens=(TOK2, TOK)))
    (sets, record), _ = rollback_plan(facts, Owned(kernel_args=(TOK2, TOK), backend="grub", trial=failed))
    assert isinstance(sets, SetKernelArgs) and sets.add == (TOK,)
    assert isinstance(record, EndTrial) and record.trial.tokens == failed.tokens and record.trial.committed == (TOK,)
    assert record.trial.reason == "verification failed: spare: no device; then rolled back by `pmemd rollback`"


def test_rollback_disarms_an_armed_trial() -> None:
    (end,), why = rollback_plan(committed_host(), owned_during_trial())
    assert why is None and isinstance(end, EndTrial) and end.disarm and end.trial.state is TrialState.FAILED


def test_rollback_without_a_commit_says_there_is_nothing_to_go_back_to() -> None:
    actions, why = rollback_plan(committed_host(), OWNED)
    assert actions == () and why is not None and "no committed trial" in why


def test_after_a_rollback_the_running_trial_tokens_stay_pmemds_and_auto_offsets_stay_put() -> None:
    """Booted with a failed trial's tokens, then rolled back: those tokens are still pmemd's (not
    foreign reservations), so an ``offset: auto`` namespace keeps its range and the refused
    trial is not armed again under another placement."""
    cfg = config({"fast": FAST, "bulk": {"size": "512M", "offset": "auto"}})
    rolled = Trial(TrialState.FAILED, tokens=(TOK2, TOK), committed=(TOK,), reason="rolled back")
    facts = trial_ok(make_facts(cmdline=f"root=/dev/vda1 ro {TOK2} {TOK} panic=10 {MARKER}",
                                next_args=("root=/dev/vda1", "ro", TOK), owned_tokens=(TOK,),
                                regions=(region(1, 4 * GIB, GIB // 2), region(0, 5 * GIB, GIB)),
                                iomem=(legacy(4 * GIB, GIB // 2, 1), legacy(5 * GIB, GIB))))
    p = plan(cfg, facts, Owned(kernel_args=(TOK,), backend="grub", trial=rolled))
    assert {v.name: v.token for v in p.namespaces}["bulk"] == TOK2
    assert not [a for a in p.actions if isinstance(a, ArmTrial | SetKernelArgs)]
    assert nth(p, 0, Reboot).removed == (TOK2,)  # back to the committed arguments at the next boot

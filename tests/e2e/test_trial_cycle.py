"""Tier 4: trial boots on real boot loaders: BIOS GRUB (a grubenv state machine) and OVMF
systemd-boot (LoaderEntryOneShot), side by side, driven by tests/e2e/jobs/trial-cycle.sh with
``settings.trial_boot`` at its default (auto). Six job boots and one crash per guest:

1. a good trial: config change -> trial armed (the default entry unchanged) -> the trial boot
   verifies, commits and mounts -> every later boot has the tokens by default, no marker;
2. a failed trial: the next trial boot crashes before pmemd runs (a unit ordered before it) ->
   ``panic=10`` resets the machine into the committed arguments by itself -> pmemd says the
   trial failed and why, arms nothing -> ``pmemd apply --retry-trial`` -> it commits;
3. a trial whose verification fails (the new region loses its device) is not committed;
4. ``pmemd rollback`` -> the next boot has the arguments from before the last commit.

Run: sudo python3 -m pytest -m e2e tests/e2e/test_trial_cycle.py -rs -s   (about 12-15 min under TCG)
PMEMD_E2E_TRIAL_RESULT=<dir> re-checks the evidence of an earlier run (<dir>/<layout>/) without booting.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest
from evidence import (
    Cycle,
    actions,
    cycle_of,
    journal_lines,
    load_result,
    logged,
    mount_lines,
    pmem_tokens,
    step_seconds,
)
from pool import Pool, Session, Work

pytestmark = pytest.mark.e2e

LAYOUTS = {"grub": "bios", "sdboot": "sdboot"}  # harness mode -> image layout
_REASONS = {mode: guest.skip_reason(mode) for mode in LAYOUTS}
if all(_REASONS.values()):
    pytest.skip(f"e2e guests unavailable: {_REASONS['grub']}", allow_module_level=True)

HERE = Path(__file__).resolve().parent
JOB = HERE / "jobs" / "trial-cycle.sh"
LIB = HERE / "jobs" / "lib.sh"
FAST, BULK, SPARE = "memmap=1G!5G", "memmap=512M!4G", "memmap=256M!4608M"
MARKER, PANIC = "pmemd.trial=1", "panic=10"
K = "nokaslr"  # settings.kaslr: auto adds it on these 8 GiB guests
CRASH = r"sysrq triggered crash"  # the panic line of the crash unit's `echo c >/proc/sysrq-trigger`


def guest_work(session: Session) -> list[Work]:
    """One run per layout, 7 qemu boots each (about 12-18 min under TCG)."""
    if os.environ.get("PMEMD_E2E_TRIAL_RESULT"):
        return []
    root = session.tmp.mktemp("e2e-trial")
    return [Work("trial", mode, 17 if mode == "grub" else 13, functools.partial(
        guest.run_job, f"LAYOUT={mode}\n" + JOB.read_text(), files=[session.deb(), LIB], mode=mode, max_boots=7,
        out_dir=root / mode, expect_panic=CRASH)) for mode in LAYOUTS if not _REASONS[mode]]


@pytest.fixture(scope="module")
def runs(guest_pool: Pool) -> dict[str, guest.RunResult | BaseException]:
    reuse = os.environ.get("PMEMD_E2E_TRIAL_RESULT")
    if reuse:
        return {mode: load_result(Path(reuse) / mode) for mode in LAYOUTS}
    return logged("pmemd trial cycle", guest_pool.results("trial"))


@pytest.fixture(params=list(LAYOUTS))
def cycle(request: pytest.FixtureRequest, runs: dict[str, guest.RunResult | BaseException]) -> Cycle:
    return cycle_of(runs, request.param, _REASONS[request.param])


def cmdline(cycle: Cycle, boot: int) -> list[str]:
    return cycle.ok(boot, "cmdline").split()


def trial_of(cycle: Cycle, boot: int, tag: str, rc: int = 0) -> dict[str, Any]:
    """`pmemd status --json`'s trial object; ``rc`` 1 where a region has failed (an error)."""
    assert cycle.rc(boot, f"{tag}-status-json") == rc, cycle.text(boot, f"{tag}-status-json")[-3000:]
    trial: dict[str, Any] = json.loads(cycle.text(boot, f"{tag}-status-json"))["trial"]
    return trial


def armed(cycle: Cycle, boot: int, tokens: list[str], committed: list[str]) -> None:
    """After arming: the one-shot carries ``tokens`` + panic= + marker; every default entry
    keeps ``committed``."""
    if cycle.res.mode == "grub":
        env = dict(ln.split("=", 1) for ln in cycle.ok(boot, "armed-grubenv").splitlines() if "=" in ln)
        assert env["pmemd_state"] == "try", env
        assert env["pmemd_try_args"].split() == [*tokens, PANIC, MARKER], env
        dropin = cycle.ok(boot, "armed-dropin").splitlines()[-1]
        assert dropin == 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX \\${pmemd_args}"', dropin
        assert "save_env pmemd_state" in cycle.ok(boot, "armed-trial-script")
        cfg = cycle.ok(boot, "armed-grubcfg").splitlines()
        linux = [ln for ln in cfg if ln.strip().startswith("linux")]
        assert linux and all("${pmemd_args}" in ln for ln in linux), cfg
        sets = [ln.strip() for ln in cfg if ln.strip().startswith("set pmemd_args=")]
        assert sets[0] == f'set pmemd_args="{" ".join(committed)}"', sets  # the default's, set by 01_pmemd
    else:
        assert cycle.ok(boot, "armed-oneshot").strip() == "pmemd-trial.conf"
        (opts,) = [ln for ln in cycle.ok(boot, "armed-trial-entry").splitlines() if ln.startswith("options ")]
        assert pmem_tokens(opts.split()[1:]) == tokens and opts.split()[-2:] == [PANIC, MARKER], opts
        places = default_tokens(cycle, boot, "armed")
        assert places and all(t == committed for t in places), places
        assert MARKER not in cycle.ok(boot, "armed-kernel-cmdline")
    trial = trial_of(cycle, boot, "armed")
    assert trial["state"] == "pending" and trial["tokens"] == tokens and trial["committed"] == committed, trial
    assert json.loads(cycle.ok(boot, "armed-plan-json"))["trial"]["next_boot"] is True


def no_trial_armed(cycle: Cycle, boot: int, tag: str) -> None:
    if cycle.res.mode == "grub":
        assert "pmemd_" not in cycle.ok(boot, f"{tag}-grubenv")
        assert cycle.rc(boot, f"{tag}-trial-script") != 0  # cat: no such file
        assert "${pmemd_args}" not in cycle.ok(boot, f"{tag}-dropin")
    else:
        assert cycle.rc(boot, f"{tag}-trial-entry") != 0


def default_tokens(cycle: Cycle, boot: int, tag: str) -> list[list[str]]:
    """pmemd's tokens in every default-boot place of the layout (committed, not trial)."""
    if cycle.res.mode == "grub":
        lines = [ln for ln in cycle.ok(boot, f"{tag}-grubcfg").splitlines() if ln.strip().startswith("linux")]
        return [pmem_tokens(ln.split()) for ln in lines]
    places = [pmem_tokens(cycle.ok(boot, f"{tag}-kernel-cmdline").split())]
    places += [pmem_tokens(ln.partition(":")[2].split()[1:]) for ln in cycle.ok(boot, f"{tag}-entries").splitlines()
               if ln.partition(":")[2].startswith("options") and "pmemd-trial" not in ln]
    return places


def test_six_job_boots_and_one_crash(cycle: Cycle) -> None:
    res = cycle.res
    assert [b.end for b in res.boots] == ["restart", "restart", "panic", "restart", "restart", "restart", "poweroff"]
    assert res.job_boots == [1, 2, 3, 4, 5, 6], [b.job_boot for b in res.boots]
    for k in res.job_boots:
        assert res.rc(k) == 0, res.job_log(k)[-4000:]


def test_1_a_change_arms_a_trial_and_leaves_the_default_alone(cycle: Cycle) -> None:
    cycle.check_installed()
    assert cycle.status(1, "pending").startswith("trial boot pending since ")
    armed(cycle, 1, [FAST, K], [])


def test_1_the_trial_boot_verifies_and_commits(cycle: Cycle) -> None:
    tokens = cmdline(cycle, 2)
    assert pmem_tokens(tokens) == [FAST, K] and PANIC in tokens and MARKER in tokens, tokens
    if cycle.res.mode == "sdboot":
        assert cycle.ok(2, "entry-selected").strip() == "pmemd-trial.conf"
    assert cycle.status(2, "synced") == "in sync: 1/1 namespaces mounted with DAX"
    trial = trial_of(cycle, 2, "committed")
    assert (trial["state"], trial["tokens"], trial["committed"]) == ("committed", [FAST, K], [FAST, K]), trial
    no_trial_armed(cycle, 2, "committed")
    assert all(t == [FAST, K] for t in default_tokens(cycle, 2, "committed"))
    entries = cycle.journal(2, "committed-journal")
    (commit,) = actions(entries, "commit-trial")
    assert commit["PMEMD_RESULT"] == "ok" and commit["MESSAGE_ID"] == "e8bbc9184c974594ad68e54a1b6d3c3b", commit
    (mount,) = mount_lines(cycle.ok(2, "committed-mountinfo"), "/pmem/fast")
    assert "dax=always" in mount


def test_1_later_boots_have_the_committed_tokens_by_default_without_the_marker(cycle: Cycle) -> None:
    tokens = cmdline(cycle, 3)  # the boot after the crashed trial runs the default entry
    assert pmem_tokens(tokens) == [FAST, K] and MARKER not in tokens and PANIC not in tokens, tokens


def test_2_the_crashed_trial_boot_ran_the_trial_arguments_and_panicked(cycle: Cycle) -> None:
    armed(cycle, 2, [BULK, FAST, K], [FAST, K])
    crash = next(b for b in cycle.res.boots if b.end == "panic")
    console = crash.console.read_text(errors="replace")
    m = re.search(r"e2e trial boot: (.*)", console)
    assert m, console[-3000:]
    crashed = m.group(1).split()
    assert pmem_tokens(crashed) == [BULK, FAST, K] and PANIC in crashed and MARKER in crashed, crashed
    assert "Kernel panic - not syncing: sysrq triggered crash" in console


def test_2_the_machine_came_back_on_the_committed_arguments_and_says_the_trial_failed(cycle: Cycle) -> None:
    tokens = cmdline(cycle, 3)
    assert pmem_tokens(tokens) == [FAST, K] and MARKER not in tokens
    status = cycle.status(3, "failed")
    assert status.startswith("trial boot failed: the trial boot did not reach verification"), status
    assert "pmemd apply --retry-trial" in status
    trial = trial_of(cycle, 3, "failed")
    assert (trial["state"], trial["tokens"], trial["committed"]) == ("failed", [BULK, FAST, K], [FAST, K]), trial
    (fail,) = actions(cycle.journal(3, "failed-journal"), "fail-trial")
    assert fail["MESSAGE_ID"] == "b7345ca25e7a4c0b808baaa30eaa7a53" and "did not reach verification" in fail["MESSAGE"]
    # nothing armed again by itself; fast still mounted with DAX
    no_trial_armed(cycle, 3, "failed")
    assert all(t == [FAST, K] for t in default_tokens(cycle, 3, "failed"))
    assert "--retry-trial" in cycle.ok(3, "failed-plan")
    (mount,) = mount_lines(cycle.ok(3, "failed-mountinfo"), "/pmem/fast")
    assert "dax=always" in mount


def test_2_retry_trial_arms_it_again_and_it_commits(cycle: Cycle) -> None:
    assert "[ok] arm a trial boot" in cycle.ok(3, "retry")
    assert trial_of(cycle, 3, "retried")["state"] == "pending"
    tokens = cmdline(cycle, 4)
    assert pmem_tokens(tokens) == [BULK, FAST, K] and MARKER in tokens
    assert cycle.status(4, "synced") == "in sync: 2/2 namespaces mounted with DAX"
    trial = trial_of(cycle, 4, "committed")
    assert (trial["state"], trial["committed"], trial["previous"]) == ("committed", [BULK, FAST, K], [FAST, K])
    assert all(t == [BULK, FAST, K] for t in default_tokens(cycle, 4, "committed"))


def test_3_a_trial_whose_region_fails_verification_is_not_committed(cycle: Cycle) -> None:
    armed(cycle, 4, [BULK, SPARE, FAST, K], [BULK, FAST, K])
    tokens = cmdline(cycle, 5)
    assert pmem_tokens(tokens) == [BULK, SPARE, FAST, K] and MARKER in tokens
    unit = dict(ln.split("=", 1) for ln in cycle.ok(5, "unbind-unit").splitlines() if "=" in ln)
    assert unit == {"Result": "success", "ExecMainStatus": "0"}, unit
    (boot5,) = [b for b in cycle.res.boots if b.job_boot == 5]
    assert re.search(r"unbinding region\d+ \(0x120000000\)", boot5.console.read_text(errors="replace"))
    status = cycle.status(5, "failed")
    assert status.startswith("trial boot failed: verification failed: spare:"), status
    trial = trial_of(cycle, 5, "failed", rc=1)  # spare's region failed: status exits 1
    assert (trial["state"], trial["committed"]) == ("failed", [BULK, FAST, K]), trial
    no_trial_armed(cycle, 5, "failed")
    assert all(t == [BULK, FAST, K] for t in default_tokens(cycle, 5, "failed"))
    (fail,) = actions(cycle.journal(5, "failed-journal"), "fail-trial")
    assert "spare" in fail["MESSAGE"]


def test_4_rollback_brings_back_the_arguments_from_before_the_last_commit(cycle: Cycle) -> None:
    out = cycle.ok(5, "rollback")
    assert "[ok] roll back the boot config" in out and "[ok] record the rollback" in out, out
    assert all(t == [FAST, K] for t in default_tokens(cycle, 5, "rolledback"))
    tokens = cmdline(cycle, 6)
    assert pmem_tokens(tokens) == [FAST, K] and MARKER not in tokens, tokens
    trial = trial_of(cycle, 6, "final")
    assert trial["state"] == "failed" and "rolled back by `pmemd rollback`" in trial["reason"], trial
    no_trial_armed(cycle, 6, "final")  # the rolled-back trial is not armed again by itself
    (mount,) = mount_lines(cycle.ok(6, "final-mountinfo"), "/pmem/fast")
    assert "dax=always" in mount


def test_print_guest_evidence(cycle: Cycle, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI log carries each boot's command line, its end and how long every step took."""
    res = cycle.res
    out = [f"== pmemd trial cycle ({res.mode}): accel {res.accel}, {len(res.boots)} qemu boots, "
           f"{res.seconds:.0f} s in qemu"]
    for b in res.boots:
        line = f"   qemu boot {b.number} (job boot {b.job_boot}): {b.seconds:.0f} s, ended by {b.end}"
        if b.job_boot is not None and res.path(f"b{b.job_boot}-cmdline").exists():
            line += f"; /proc/cmdline: {res.path(f'b{b.job_boot}-cmdline').read_text().strip()}"
        else:
            m = re.search(r"e2e trial boot: (.*)", b.console.read_text(errors="replace"))
            line += f"; command line (console): {m.group(1).strip() if m else '?'}"
        out.append(line)
    for k in res.job_boots:
        for tag in ("armed", "committed", "failed", "retried", "rolledback", "final"):
            if res.path(f"b{k}-status-{tag}").exists():
                out.append(f"# boot {k} STATUS {tag}: {res.path(f'b{k}-status-{tag}').read_text().strip()}")
        for tag in ("committed", "failed", "final"):
            if res.path(f"b{k}-{tag}-journal").exists():
                out += [ln for ln in journal_lines(cycle, k, f"{tag}-journal") if "trial" in ln]
        out.append(f"# boot {k} step durations (s): "
                   + ", ".join(f"{n} {s:.1f}" for n, s in step_seconds(res, k)))
    with capsys.disabled():
        print("\n" + "\n".join(out))
    assert len(out) > 7

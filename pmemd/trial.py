"""Trial boots: new kernel arguments are booted once, verified, and only then committed. Pure.

This module is the state machine and its rules; each layout module says whether it can boot a
trial once (``BootConfig.trial_ok``) and carries out arming, committing and disarming
(``bootloader.grub``: a grubenv state machine; ``bootloader.sdboot``: a trial entry booted through
``LoaderEntryOneShot``; ``bootloader.grubby``: a trial BLS entry booted through ``grub2-reboot``).
``plan_boot`` turns the transitions into actions.

In a trial, a change of pmemd's tokens is first armed as a one-shot boot; the default entry keeps
the committed arguments. The trial boot's command line
carries the committed arguments with pmemd's new tokens, ``panic=N`` (a panic resets into the
default) and ``MARKER`` (so pmemd can tell the trial boot from any other).

The state, kept in pmemd's state file, moves so::

    none ── arm ──> pending ── boot with marker ──> running ── every region verified ──> committed
                       │                               └──── a region failed ─────────> failed
                       └──── boot without marker (panic, hang + reset, power-off) ──────> failed

``failed`` is sticky: pmemd does not arm the same tokens again by itself; a changed config or
``pmemd apply --retry-trial`` does. ``advance`` is the whole transition table; the executor
only carries out what it returns.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from pmemd.frozen import frozen

MARKER = "pmemd.trial=1"  # a dotted name: the kernel ignores it and does not pass it to init
PANIC_SECONDS = 10


class TrialState(StrEnum):
    NONE = "none"
    PENDING = "pending"  # armed; the trial boot has not happened yet
    RUNNING = "running"  # this boot is the trial boot; verification has not finished
    COMMITTED = "committed"
    FAILED = "failed"


@frozen
class Trial:
    state: TrialState = TrialState.NONE
    tokens: tuple[str, ...] = ()  # pmemd's tokens the trial boot carries
    committed: tuple[str, ...] = ()  # pmemd's tokens of the default entry while the trial runs
    previous: tuple[str, ...] | None = None  # the committed tokens before the last commit (rollback)
    since: str | None = None  # ISO 8601 of the last transition
    boot_id: str | None = None  # the boot in which the trial was armed
    trial_boot_id: str | None = None  # the trial boot itself, once it ran
    reason: str = ""


class Step(StrEnum):
    """What the executor must do after a transition."""

    NOTHING = "nothing"
    COMMIT = "commit"  # make ``tokens`` the default, drop the one-shot, journal it
    DISARM = "disarm"  # drop the one-shot / trial entry; the default stays as it is
    RECORD = "record"  # only the state changes


@frozen
class Observed:
    """What the current boot shows about a trial."""

    boot_id: str | None
    cmdline: tuple[str, ...]  # /proc/cmdline tokens
    verified: bool | None  # None: verification has not finished yet
    failures: tuple[str, ...] = ()  # per region: what did not come up as declared


def advance(trial: Trial, seen: Observed, *, now: str) -> tuple[Trial, Step]:
    """The next state of ``trial`` given this boot, and what must be done about it."""
    in_trial_boot = MARKER in seen.cmdline
    if trial.state is TrialState.PENDING:
        if seen.boot_id == trial.boot_id:
            return trial, Step.NOTHING  # armed in this boot; the trial reboot has not happened
        if not in_trial_boot:
            return replace(trial, state=TrialState.FAILED, since=now, trial_boot_id=None, reason=(
                "the trial boot did not reach verification (it panicked, hung and was reset, or was "
                "powered off); this boot runs the committed arguments")), Step.DISARM
        trial = replace(trial, state=TrialState.RUNNING, since=now, trial_boot_id=seen.boot_id, reason="")
    if trial.state is TrialState.RUNNING:
        if seen.boot_id != trial.trial_boot_id:
            return replace(trial, state=TrialState.FAILED, since=now, reason=(
                "the trial boot ended before its verification finished; this boot runs the committed "
                "arguments")), Step.DISARM
        if seen.verified is None:
            return trial, Step.RECORD
        if not seen.verified:
            return replace(trial, state=TrialState.FAILED, since=now, reason="verification failed: "
                           + "; ".join(seen.failures or ("a region did not come up as declared",))), Step.DISARM
        return replace(trial, state=TrialState.COMMITTED, since=now, committed=trial.tokens,
                       previous=trial.committed, reason="every region verified in the trial boot"), Step.COMMIT
    return trial, Step.NOTHING


def may_arm(trial: Trial, tokens: tuple[str, ...], *, retry: bool) -> tuple[bool, str]:
    """Whether a trial of ``tokens`` may be armed now, and why not."""
    if trial.state in (TrialState.PENDING, TrialState.RUNNING) and trial.tokens == tokens:
        return False, f"a trial of {' '.join(tokens)} is already {trial.state}"
    if trial.state is TrialState.FAILED and trial.tokens == tokens and not retry:
        return False, (f"the trial of {' '.join(tokens)} failed ({trial.reason}); change the config or run "
                       "`pmemd apply --retry-trial`")
    return True, ""


def trial_cmdline(default_args: tuple[str, ...], *, committed: tuple[str, ...], tokens: tuple[str, ...]
                  ) -> tuple[str, ...]:
    """The trial boot's arguments: the default entry's, pmemd's committed tokens replaced by
    ``tokens``, with ``panic=`` and the marker (an existing ``panic=`` is replaced)."""
    kept = [a for a in default_args if a not in committed and a not in tokens and a != MARKER
            and not a.startswith("panic=")]
    return (*kept, *tokens, f"panic={PANIC_SECONDS}", MARKER)


# GRUB has no write support through these (``grub-probe --target=abstraction`` on /boot/grub
# names them; MD RAID comes as diskfilter): a one-shot there would stay for good. The same check
# as GRUB's own 00_header makes before it uses save_env.
_UNWRITABLE_ABSTRACTIONS = ("diskfilter", "lvm")
_UNWRITABLE_FS = ("zfs", "btrfs")


@frozen
class Support:
    ok: bool
    reason: str


def grubenv_support(*, abstractions: tuple[str, ...] = (), fs: str | None = None,
                    grub_version: tuple[int, ...] | None = None) -> Support:
    """Whether GRUB can write its grubenv where /boot/grub lives, so a one-shot ends by itself."""
    bad = [a for a in abstractions if a in _UNWRITABLE_ABSTRACTIONS]
    if bad:
        return Support(False, f"/boot/grub is on {', '.join(bad)}: GRUB cannot write its grubenv there, "
                       "so a one-shot boot would stay for good")
    fs_ok = fs not in _UNWRITABLE_FS or (fs == "btrfs" and (grub_version or ()) >= (2, 14))
    if not fs_ok:
        return Support(False, f"/boot/grub is on {fs}: GRUB cannot write its grubenv there, so a "
                       "one-shot boot would stay for good")
    return Support(True, "GRUB marks the trial as tried in grubenv before the kernel starts")


def decide(mode: str, ok: bool, why: str) -> tuple[bool, str | None]:
    """(trial or not, an error for ``always`` on a layout without one-shot boots).
    ``mode`` is ``settings.trial_boot``: auto, always or never."""
    if mode == "never":
        return False, None
    if not ok:
        return False, (f"settings.trial_boot is always, but {why}; set trial_boot: auto or never"
                       if mode == "always" else None)
    return True, None

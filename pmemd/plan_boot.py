"""The planner's boot steps: which kernel arguments pmemd's slot must hold, whether they are first
booted as a trial (``pmemd.trial``), and the reboot gate. Pure."""

from __future__ import annotations

from dataclasses import replace

from pmemd.actions import Action, ArmTrial, ClearReboot, CommitTrial, EndTrial, FailTrial, Range, Reboot, SetKernelArgs
from pmemd.diagnose import NamespaceView, Running
from pmemd.facts import HostFacts, Layout
from pmemd.frozen import frozen
from pmemd.model import Config, RebootPolicy
from pmemd.parse import parse_cmdline
from pmemd.state import Owned
from pmemd.trial import Observed, Step, Trial, TrialState, advance, decide, may_arm
from pmemd.validate import Issue, Placement, kaslr_token


@frozen
class BootArgs:
    """pmemd's tokens: wanted, in the next boot's arguments, and its own that must go."""

    desired: tuple[str, ...]  # tokens pmemd's slot must hold, in boot-config order
    stale: tuple[str, ...]  # tokens pmemd owns that the config no longer wants
    next_args: tuple[str, ...] | None  # the default entry's arguments; None: unreadable
    actions: tuple[Action, ...] = ()
    issues: tuple[Issue, ...] = ()
    notes: tuple[str, ...] = ()


def _error(key: str, message: str) -> Issue:
    return Issue("error", None, key, message)


def _next_arg_issues(config: Config, facts: HostFacts) -> tuple[Issue, ...]:
    damaged = tuple(_error("", p) for p in facts.boot.problems)
    return damaged + _next_arg_limits(config, facts)


def _next_arg_limits(config: Config, facts: HostFacts) -> tuple[Issue, ...]:
    next_args = facts.boot.default_args
    if next_args is None:
        if not config.namespaces:
            return ()
        return (_error("settings.bootloader", f"cannot read the next-boot kernel arguments (layout "
                       f"{facts.boot.layout}: {facts.boot.detected_by}); set settings.bootloader if "
                       "detection is wrong"),)
    return tuple(_error("", f"the next-boot arguments contain {e}, which would limit usable RAM; fix the boot "
                        "configuration by hand") for e in parse_cmdline(" ".join(next_args)).limits)


def boot_args(config: Config, facts: HostFacts, owned: Owned, placements: dict[str, Placement]) -> BootArgs:
    kaslr, kaslr_why = kaslr_token(config, facts)
    wanted = tuple(p.token for p in sorted(placements.values(), key=lambda p: p.start)) + ((kaslr,) if kaslr else ())
    notes = [f"nokaslr: {kaslr_why}"] if kaslr and placements else []
    next_args = facts.boot.default_args
    next_set = set(next_args or ())
    # A desired token that the boot config already carries from elsewhere (the user's own
    # /etc/default/grub, a lost state file) is left where it is: writing it again would
    # duplicate it, and pmemd never takes over or removes arguments it did not write.
    supplied = next_set - set(owned.kernel_args) - set(facts.boot.owned_tokens)
    desired = tuple(t for t in wanted if t not in supplied)
    notes += [f"{t} is already in the boot config, set outside pmemd; pmemd uses it as it is"
              for t in sorted(supplied & {p.token for p in placements.values()})]
    stale = tuple(t for t in owned.kernel_args if t not in desired)
    args = BootArgs(desired, stale, next_args, issues=_next_arg_issues(config, facts), notes=tuple(notes))
    if next_args is None:
        return args
    to_add = tuple(t for t in desired if t not in next_set)
    to_remove = tuple(t for t in stale if t in next_set or t in facts.boot.owned_tokens)
    slot_ok = facts.boot.owned_file is None or set(facts.boot.owned_tokens) == set(desired)
    if not (to_add or to_remove or not slot_ok):
        return args
    issues = args.issues
    if facts.boot.layout is Layout.UNKNOWN:
        return replace(args, issues=(*issues, _error("settings.bootloader", "no supported boot loader found (GRUB "
                     "on Debian/Ubuntu, grubby, grub2-mkconfig, systemd-boot); set settings.bootloader")))
    parts = ([f"add {' '.join(to_add)}"] if to_add else []) + ([f"remove {' '.join(to_remove)}"] if to_remove else [])
    act = SetKernelArgs(summary=f"boot config ({facts.boot.layout}): " + ("; ".join(parts) or "rewrite pmemd's tokens"),
                        layout=facts.boot.layout, detected_by=facts.boot.detected_by, add=desired, remove=stale,
                        ranges=tuple(Range(name=n, start=p.start, size=p.size) for n, p in placements.items()))
    return replace(args, actions=(act,), issues=issues)


_POLICY_TEXT = {
    RebootPolicy.NEVER: "record that a reboot is needed (reboot: never)",
    RebootPolicy.FLAG: "flag a pending reboot (/run/reboot-required)",
    RebootPolicy.NOW: "reboot now",
}


def reboot_gate(config: Config, facts: HostFacts, owned: Owned, boot: BootArgs) -> tuple[bool, tuple[Action, ...]]:
    """(reboot needed, the reboot or clear-reboot action): pmemd's tokens that the next boot
    will have and the running kernel lacks, or the reverse."""
    after_next = (set(boot.next_args or ()) | set(boot.desired)) - set(boot.stale)
    running = set(facts.cmdline.tokens)
    pmemd_tokens = tuple(dict.fromkeys((*boot.desired, *owned.kernel_args, *boot.stale)))  # in boot-config order
    added = tuple(t for t in pmemd_tokens if t in after_next and t not in running)
    removed = tuple(t for t in pmemd_tokens if t not in after_next and t in running)
    pending = owned.pending_reboot
    policy = config.settings.reboot
    if not (added or removed):
        if pending is None:
            return False, ()
        why = ("the reboot happened and the arguments are in effect" if pending.boot_id != facts.boot_id
               else "the config returned to the booted state")
        return False, (ClearReboot(summary=f"clear the pending reboot: {why}",
                                   cancel_scheduled=bool(pending.scheduled_for) and pending.boot_id == facts.boot_id),)
    reason = "; ".join(filter(None, [f"{' '.join(added)} added" if added else "",
                                     f"{' '.join(removed)} removed" if removed else ""]))
    same = (pending is not None and set(pending.added) == set(added) and set(pending.removed) == set(removed)
            and (policy is not RebootPolicy.SCHEDULE or pending.scheduled_for is not None))
    if same:
        return True, ()
    what = _POLICY_TEXT.get(policy) or f"schedule a reboot at {config.settings.reboot_window}"
    return True, (Reboot(summary=f"{what}: {reason}", policy=policy, window=config.settings.reboot_window,
                         reason=reason, added=added, removed=removed, boot_id=facts.boot_id),)


# --- trial boots (pmemd.trial) -----------------------------------------------------------


@frozen
class TrialView:
    """What this boot shows about the trial, and how the rest of the plan must see the host."""

    facts: HostFacts
    owned: Owned
    actions: tuple[Action, ...] = ()


def _verification(trial: Trial, facts: HostFacts, views: tuple[NamespaceView, ...]) -> tuple[str, ...]:
    """What in this (trial) boot is not as the trial's tokens declare: each token on the command
    line, and each region the config declares with one of them verified (``diagnose``)."""
    failures = [f"{t} is not on the command line" for t in trial.tokens if t not in facts.cmdline.tokens]
    failures += [f"{v.name}: {'; '.join(v.diagnosis) or v.running}" for v in views
                 if v.token in trial.tokens and v.running is Running.FAILED]
    return tuple(failures)


def _with_default_tokens(facts: HostFacts, *, old: tuple[str, ...], new: tuple[str, ...]) -> HostFacts:
    """``facts`` as they will be once the default entry carries ``new`` instead of ``old``."""
    entries = tuple(replace(e, args=(*(a for a in e.args if a not in old and a not in new), *new)) if e.default
                    or (not any(x.default for x in facts.boot.entries) and i == 0) else e
                    for i, e in enumerate(facts.boot.entries))
    owned_tokens = new if facts.boot.owned_file else facts.boot.owned_tokens
    return replace(facts, boot=replace(facts.boot, entries=entries, owned_tokens=owned_tokens, trial_args=None))


def trial_progress(facts: HostFacts, owned: Owned, views: tuple[NamespaceView, ...]) -> TrialView:
    """Move an armed or running trial on with what this boot shows (``trial.advance``): commit it,
    fail it, or leave it. The facts and the record returned are those after that step."""
    trial = owned.trial
    if trial.state not in (TrialState.PENDING, TrialState.RUNNING):
        return TrialView(facts, owned)
    failures = _verification(trial, facts, views)
    seen = Observed(facts.boot_id, facts.cmdline.tokens, not failures, failures)
    new, step = advance(trial, seen, now="")
    lay, by = facts.boot.layout, facts.boot.detected_by
    if step is Step.COMMIT:
        act: Action = CommitTrial(summary=f"commit the trial boot: {' '.join(new.tokens) or '(no pmemd arguments)'} "
                                  "become the default (every region verified)",
                                  remove=tuple(t for t in trial.committed if t not in new.tokens), layout=lay,
                                  detected_by=by, trial=new)
        after = _with_default_tokens(facts, old=trial.committed, new=new.tokens)
        return TrialView(after, replace(owned, trial=new, kernel_args=new.tokens), (act,))
    if step is Step.DISARM:
        act = FailTrial(summary=f"trial boot of {' '.join(trial.tokens)} failed: {new.reason}; the default keeps "
                        f"{' '.join(trial.committed) or '(no pmemd arguments)'}", layout=lay, detected_by=by,
                        trial=new)
        return TrialView(replace(facts, boot=replace(facts.boot, trial_args=None)),
                         replace(owned, trial=new, kernel_args=trial.committed), (act,))
    return TrialView(facts, owned)


def committed_tokens(facts: HostFacts, owned: Owned) -> tuple[str, ...]:
    """pmemd's tokens in the default boot entry."""
    default = set(facts.boot.default_args or ())
    return tuple(t for t in owned.kernel_args if t in default)


def trial_gate(config: Config, facts: HostFacts, owned: Owned, boot: BootArgs, *, retry: bool
               ) -> tuple[BootArgs, str]:
    """Whether pmemd's new tokens are written as the default or first booted once as a trial
    (``settings.trial_boot``), or not at all (a trial of them failed). The boot arguments
    returned carry the action that does it; the text says which and why."""
    trial = owned.trial
    sets = [a for a in boot.actions if isinstance(a, SetKernelArgs)]
    committed = trial.committed if trial.state is TrialState.PENDING else committed_tokens(facts, owned)
    if not sets:
        if trial.state is TrialState.PENDING and trial.tokens != boot.desired:
            end = EndTrial(summary=f"disarm the trial boot of {' '.join(trial.tokens)}: the config no longer asks "
                           "for it", layout=facts.boot.layout, detected_by=facts.boot.detected_by,
                           trial=replace(trial, state=TrialState.NONE, reason="the config changed back"))
            return replace(boot, actions=(end,)), "no trial: the boot config already has the arguments"
        return boot, ""
    act = sets[0]
    ok, why = may_arm(trial, act.add, retry=retry)
    if not ok:
        # The next boot is the committed one: the reboot gate compares the running kernel with that.
        keep = replace(boot, actions=(), desired=committed,
                       stale=tuple(t for t in (*boot.stale, *trial.tokens) if t not in committed))
        if trial.state is TrialState.PENDING:
            return replace(boot, actions=()), f"the next boot is a trial of {' '.join(trial.tokens)}"
        return replace(keep, issues=(*boot.issues, Issue("warning", None, "settings.trial_boot", why))), why
    use, error = decide(config.settings.trial_boot.value, facts.boot.trial_ok, facts.boot.trial_why)
    if error:
        return replace(boot, actions=(), issues=(*boot.issues, _error("settings.trial_boot", error))), error
    if not use:
        why = ("settings.trial_boot is never" if config.settings.trial_boot.value == "never"
               else f"no trial boot: {facts.boot.trial_why}")
        return boot, why
    new = Trial(TrialState.PENDING, tokens=act.add, committed=committed, previous=trial.previous,
                boot_id=facts.boot_id)
    arm = ArmTrial(summary=f"arm a trial boot ({act.layout}): the next boot only tries "
                   f"{' '.join(act.add) or '(no pmemd arguments)'}; the default keeps "
                   f"{' '.join(committed) or '(no pmemd arguments)'}",
                   layout=act.layout, detected_by=act.detected_by, trial=new, ranges=act.ranges)
    return replace(boot, actions=(arm,)), f"the next boot is a trial: {facts.boot.trial_why}"


def rollback_plan(facts: HostFacts, owned: Owned) -> tuple[tuple[Action, ...], str | None]:
    """``pmemd rollback``: an armed trial is disarmed; otherwise the default goes back to the
    tokens committed before the last trial commit, and those of the last one are not tried
    again by themselves. (actions, or why there is nothing to roll back)."""
    trial = owned.trial
    lay, by = facts.boot.layout, facts.boot.detected_by
    if trial.state is TrialState.PENDING:
        return (EndTrial(summary=f"disarm the trial boot of {' '.join(trial.tokens)}", layout=lay, detected_by=by,
                         trial=replace(trial, state=TrialState.FAILED, reason="disarmed by `pmemd rollback`")),), None
    if trial.previous is None:
        return (), ("no committed trial to roll back: pmemd keeps the arguments before a trial commit only "
                    "(settings.trial_boot)")
    current = committed_tokens(facts, owned) or trial.committed
    back = trial.previous
    layout = Layout(owned.backend) if owned.backend in tuple(Layout) else facts.boot.layout
    sets = SetKernelArgs(summary=f"roll back the boot config ({layout}): {' '.join(back) or '(no pmemd arguments)'} "
                         f"instead of {' '.join(current) or '(no pmemd arguments)'}", layout=layout,
                         detected_by=facts.boot.detected_by, add=back,
                         remove=tuple(t for t in current if t not in back))
    # Not tried again by itself: what was rolled back, or, after a failed trial, what failed.
    failed = trial.state is TrialState.FAILED
    sticky = trial.tokens if failed else current
    reason = f"{trial.reason}; then rolled back by `pmemd rollback`" if failed else "rolled back by `pmemd rollback`"
    record = EndTrial(summary=f"record the rollback: {' '.join(sticky)} are not tried again until the config "
                      "changes or `pmemd apply --retry-trial`", disarm=False, layout=lay, detected_by=by,
                      trial=replace(trial, state=TrialState.FAILED, tokens=sticky, committed=back, previous=None,
                                    reason=reason))
    return (sets, record), None

"""The planner's boot steps: which kernel arguments pmemd's slot must hold, and the reboot gate. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pmemd.actions import Action, ClearReboot, Range, Reboot, SetKernelArgs
from pmemd.facts import HostFacts, Layout
from pmemd.model import Config, RebootPolicy
from pmemd.parse import parse_cmdline
from pmemd.state import Owned
from pmemd.validate import Issue, Placement, kaslr_token


@dataclass(frozen=True)
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
    pmemd_tokens = tuple(dict.fromkeys((*boot.desired, *owned.kernel_args)))  # in boot-config order
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

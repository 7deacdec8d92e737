"""The executor's boot handlers: write pmemd's kernel arguments, arm, commit and end trial
boots, flag or schedule the reboot, clear it once it happened. Every change goes through the
``Effects`` object passed in."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from pmemd import bootloader
from pmemd import state as st
from pmemd.actions import ArmTrial, ClearReboot, CommitTrial, EndTrial, FailTrial, Range, Reboot, SetKernelArgs
from pmemd.bootloader import BootLayout, BootLoaderError
from pmemd.effects import HostEffects
from pmemd.facts import Layout
from pmemd.frozen import frozen
from pmemd.model import RebootPolicy
from pmemd.trial import MARKER as TRIAL_MARKER
from pmemd.trial import TrialState

REBOOT_REQUIRED = "/run/reboot-required"
REBOOT_PKGS = "/run/reboot-required.pkgs"


class ActionFailed(RuntimeError):
    pass


@dataclass
class Book:
    """What pmemd owns, saved through the effects after every change to it."""

    owned: st.Owned
    fx: HostEffects

    def save(self, owned: st.Owned) -> None:
        self.owned = owned
        self.fx.save_state(owned)


@frozen
class _Undo:
    """What a boot-config change started from: where its writes begin, and pmemd's record."""

    layout: Layout
    tokens: tuple[str, ...]
    mark: int
    before: st.Owned


def _roll_back(undo: _Undo, *, fx: HostEffects, book: Book, regenerate: bool) -> str:
    """Put the backed-up files back. The state file forgets the new tokens only when the boot
    config is provably the old one again; otherwise they stay pmemd's, so it can remove them."""
    keep = f"pmemd keeps counting {' '.join(undo.tokens)} as its own so it can remove them later"
    written = fx.written[undo.mark:]
    if not written:  # grubby edits its entries itself: nothing to put back
        return f"{undo.layout} may have changed the entries part-way; {keep}"
    for path, existed in reversed(written):
        fx.restore(path, existed=existed)
    if regenerate:
        try:
            bootloader.layout(undo.layout).regenerate(fx)
        except BootLoaderError as exc:
            return f"the previous files were restored but regenerating failed ({exc}); {keep}"
    book.save(replace(book.owned, kernel_args=undo.before.kernel_args, backend=undo.before.backend))
    return "the previous boot config was restored"


def _readback_problem(lay: BootLayout, fx: HostEffects, *, detected_by: str, add: tuple[str, ...],
                      remove: tuple[str, ...], trial: tuple[str, ...] | None) -> str | None:
    """What the boot config read back lacks: ``add`` and none of ``remove`` in the default entry,
    and ``trial`` (or no trial at all, for None) in the armed trial boot."""
    boot = lay.read(fx.root, detected_by=detected_by)
    args = set(boot.default_args or ())
    missing = [t for t in add if t not in args]
    left = [t for t in remove if t in args and t not in add]
    armed = boot.trial_args
    trial_wrong = (armed is not None) if trial is None else (armed is None or not set(trial) <= set(armed))
    if not (missing or left or trial_wrong):
        return None
    return ("read-back of the next-boot arguments does not match: "
            + (f"missing {' '.join(missing)} " if missing else "")
            + (f"still has {' '.join(left)} " if left else "")
            + (f"trial boot armed with {' '.join(armed or ()) or 'nothing'} " if trial_wrong else "")
            + f"(default entry: {' '.join(boot.default_args or ()) or 'none'})")


def _layout(name: Layout) -> BootLayout:
    try:
        return bootloader.layout(name)
    except BootLoaderError as exc:
        raise ActionFailed(str(exc)) from None


def _with_ranges(owned: st.Owned, ranges: tuple[Range, ...]) -> st.Owned:
    """Record the namespaces first: if pmemd dies after the write, the next pass still knows
    which tokens and ranges are its own."""
    for r in ranges:
        prev = owned.namespaces.get(r.name)
        owned = owned.with_namespace(r.name, replace(prev, start=r.start, size=r.size) if prev
                                     else st.OwnedNamespace(start=r.start, size=r.size))
    return owned


def _change_boot(*, layout: Layout, fx: HostEffects, book: Book, claim: tuple[str, ...],
                 change: Callable[[BootLayout], None], check: Callable[[BootLayout], str | None]) -> None:
    """Write through ``change``, read back with ``check``; on failure put the old files back.
    ``claim``: tokens counted as pmemd's from before the write on."""
    lay = _layout(layout)
    before = book.owned
    book.save(replace(before, kernel_args=tuple(dict.fromkeys((*before.kernel_args, *claim))), backend=layout.value))
    undo = _Undo(layout, claim, len(fx.written), before)
    try:
        change(lay)
    except (BootLoaderError, OSError) as exc:
        done = _roll_back(undo, fx=fx, book=book, regenerate=False)
        raise ActionFailed(f"{layout}: {exc}; {done}") from None
    problem = fx.confirm("the next-boot arguments read back", lambda: check(lay))
    if problem:
        raise ActionFailed(f"{problem}; {_roll_back(undo, fx=fx, book=book, regenerate=True)}")


def _write_default(*, layout: Layout, detected_by: str, fx: HostEffects, book: Book, add: tuple[str, ...],
                   remove: tuple[str, ...]) -> None:
    """Make ``add`` pmemd's tokens of every boot (no trial armed)."""
    _change_boot(layout=layout, fx=fx, book=book, claim=add,
                 change=lambda lay: lay.write(fx, desired=add, remove=remove),
                 check=lambda lay: _readback_problem(lay, fx, detected_by=detected_by, add=add, remove=remove,
                                                     trial=None))
    book.save(replace(book.owned, kernel_args=add, backend=layout.value))


def set_kernel_args(act: SetKernelArgs, *, fx: HostEffects, book: Book) -> str:
    book.save(_with_ranges(book.owned, act.ranges))
    _write_default(layout=act.layout, detected_by=act.detected_by, fx=fx, book=book, add=act.add, remove=act.remove)
    return f"next boot: {' '.join(act.add) or '(no pmemd arguments)'}"


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def arm_trial(act: ArmTrial, *, fx: HostEffects, book: Book) -> str:
    trial = act.trial
    book.save(_with_ranges(book.owned, act.ranges))
    _change_boot(layout=act.layout, fx=fx, book=book, claim=trial.tokens,
                 change=lambda lay: lay.arm_trial(fx, committed=trial.committed, tokens=trial.tokens),
                 check=lambda lay: _readback_problem(
                     lay, fx, detected_by=act.detected_by, add=trial.committed,
                     remove=tuple(t for t in trial.tokens if t not in trial.committed),
                     trial=(*trial.tokens, TRIAL_MARKER)))
    book.save(replace(book.owned, trial=replace(trial, since=_now())))
    return (f"the next boot only: {' '.join(trial.tokens) or '(no pmemd arguments)'} {TRIAL_MARKER}; every "
            f"boot after it: {' '.join(trial.committed) or '(no pmemd arguments)'} until the trial is verified")


def commit_trial(act: CommitTrial, *, fx: HostEffects, book: Book) -> str:
    trial = act.trial
    _write_default(layout=act.layout, detected_by=act.detected_by, fx=fx, book=book, add=trial.tokens,
                   remove=act.remove)
    book.save(replace(book.owned, trial=replace(trial, since=_now())))
    return f"committed: every boot now has {' '.join(trial.tokens) or '(no pmemd arguments)'}"


def end_trial(act: FailTrial | EndTrial, *, fx: HostEffects, book: Book) -> str:
    trial = act.trial
    if act.disarm:
        _write_default(layout=act.layout, detected_by=act.detected_by, fx=fx, book=book, add=trial.committed,
                       remove=tuple(t for t in book.owned.kernel_args if t not in trial.committed))
    book.save(replace(book.owned, trial=replace(trial, since=_now())))
    if trial.state is TrialState.FAILED:
        return (f"trial failed: {trial.reason}; not tried again until the config changes or `pmemd apply "
                "--retry-trial`")
    return f"trial ended: {trial.reason}"


def _flag_reboot(fx: HostEffects) -> None:
    fx.touch(REBOOT_REQUIRED)
    if "pmemd" not in (fx.root.read_text(REBOOT_PKGS) or "").split():
        fx.append_line(REBOOT_PKGS, "pmemd")


def _next_elapse(fx: HostEffects, window: str) -> datetime:
    res = fx.query(["systemd-analyze", "calendar", "--iterations=1", window], chroot=True)
    m = re.search(r"Next elapse: \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", res.stdout)
    if not res.ok or not m:
        raise ActionFailed(f"settings.reboot_window {window!r} is not a calendar expression systemd "
                           f"understands: {res.describe()}")
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")


def _systemctl_has_when(fx: HostEffects) -> bool:
    return "--when" in fx.query(["systemctl", "--help"], chroot=True).stdout


def _schedule(act: Reboot, fx: HostEffects) -> datetime:
    when = _next_elapse(fx, act.window)
    if _systemctl_has_when(fx):
        res = fx.run(["systemctl", "reboot", f"--when={when:%Y-%m-%d %H:%M:%S}"], chroot=True)
    else:
        minutes = max(1, math.ceil((when - datetime.now()).total_seconds() / 60))
        res = fx.run(["shutdown", "-r", f"+{minutes}", "pmemd: memmap= changed"], chroot=True)
    if not res.ok:
        raise ActionFailed(f"scheduling the reboot failed: {res.describe()}")
    return when


def reboot(act: Reboot, *, fx: HostEffects, book: Book) -> str:
    pending = st.PendingReboot(since=_now(), boot_id=act.boot_id,
                               reason=act.reason, added=act.added, removed=act.removed)
    if act.policy is RebootPolicy.NEVER:
        book.save(replace(book.owned, pending_reboot=pending))
        return "reboot needed; not flagged (reboot: never)"
    _flag_reboot(fx)
    if act.policy is RebootPolicy.SCHEDULE:
        when = _schedule(act, fx)
        book.save(replace(book.owned, pending_reboot=replace(pending, scheduled_for=when.isoformat())))
        return f"reboot scheduled for {when:%Y-%m-%d %H:%M}"
    book.save(replace(book.owned, pending_reboot=pending))
    if act.policy is RebootPolicy.NOW:
        res = fx.run(["systemctl", "reboot"], chroot=True)
        if not res.ok:
            raise ActionFailed(f"systemctl reboot failed: {res.describe()}")
        return "rebooting now (reboot: now)"
    return f"reboot flagged in {REBOOT_REQUIRED}"


def clear_reboot(act: ClearReboot, *, fx: HostEffects, book: Book) -> str:
    if act.cancel_scheduled:
        fx.run(["systemctl", "reboot", "--when=cancel"] if _systemctl_has_when(fx) else ["shutdown", "-c"],
               chroot=True)
    pkgs = [p for p in (fx.root.read_text(REBOOT_PKGS) or "").split() if p]
    done = "cleared"
    if "pmemd" in pkgs:
        rest = [p for p in pkgs if p != "pmemd"]
        if rest:
            fx.write(REBOOT_PKGS, "\n".join(rest) + "\n")
            done += f"; {REBOOT_REQUIRED} kept for {' '.join(rest)}"
        else:
            fx.remove(REBOOT_PKGS)
            fx.remove(REBOOT_REQUIRED)
            done += f"; {REBOOT_REQUIRED} removed"
    book.save(replace(book.owned, pending_reboot=None))
    return done

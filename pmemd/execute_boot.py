"""The executor's boot handlers: write pmemd's kernel arguments, flag or schedule the reboot,
clear it once it happened. Every change goes through the ``Effects`` object passed in."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime

from pmemd import bootloader
from pmemd import state as st
from pmemd.actions import ClearReboot, Reboot, SetKernelArgs
from pmemd.bootloader import BootLayout, BootLoaderError
from pmemd.effects import HostEffects
from pmemd.model import RebootPolicy

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


def _roll_back(act: SetKernelArgs, *, fx: HostEffects, book: Book, mark: int, before: st.Owned,
               regenerate: bool) -> str:
    """Put the backed-up files back. The state file forgets the new tokens only when the boot
    config is provably the old one again; otherwise they stay pmemd's, so it can remove them."""
    keep = f"pmemd keeps counting {' '.join(act.add)} as its own so it can remove them later"
    written = fx.written[mark:]
    if not written:  # grubby edits its entries itself: nothing to put back
        return f"{act.layout} may have changed the entries part-way; {keep}"
    for path, existed in reversed(written):
        fx.restore(path, existed=existed)
    if regenerate:
        try:
            bootloader.layout(act.layout).regenerate(fx)
        except BootLoaderError as exc:
            return f"the previous files were restored but regenerating failed ({exc}); {keep}"
    book.save(replace(book.owned, kernel_args=before.kernel_args, backend=before.backend))
    return "the previous boot config was restored"


def _readback_problem(act: SetKernelArgs, lay: BootLayout, fx: HostEffects) -> str | None:
    boot = lay.read(fx.root, detected_by=act.detected_by)
    args = set(boot.default_args or ())
    missing = [t for t in act.add if t not in args]
    left = [t for t in act.remove if t in args and t not in act.add]
    if not (missing or left):
        return None
    return ("read-back of the next-boot arguments does not match: "
            + (f"missing {' '.join(missing)} " if missing else "")
            + (f"still has {' '.join(left)} " if left else "")
            + f"(default entry: {' '.join(boot.default_args or ()) or 'none'})")


def set_kernel_args(act: SetKernelArgs, *, fx: HostEffects, book: Book) -> str:
    try:
        lay = bootloader.layout(act.layout)
    except BootLoaderError as exc:
        raise ActionFailed(str(exc)) from None
    # Record the namespaces first: if pmemd dies after the write, the next pass still knows
    # which tokens and ranges are its own.
    before = owned = book.owned
    for r in act.ranges:
        prev = owned.namespaces.get(r.name)
        owned = owned.with_namespace(r.name, replace(prev, start=r.start, size=r.size) if prev
                                     else st.OwnedNamespace(start=r.start, size=r.size))
    book.save(replace(owned, kernel_args=tuple(dict.fromkeys((*owned.kernel_args, *act.add))),
                      backend=act.layout.value))
    mark = len(fx.written)
    try:
        lay.write(fx, desired=act.add, remove=act.remove)
    except (BootLoaderError, OSError) as exc:
        undo = _roll_back(act, fx=fx, book=book, mark=mark, before=before, regenerate=False)
        raise ActionFailed(f"{act.layout}: {exc}; {undo}") from None
    problem = fx.confirm("the next-boot arguments read back", lambda: _readback_problem(act, lay, fx))
    if problem:
        undo = _roll_back(act, fx=fx, book=book, mark=mark, before=before, regenerate=True)
        raise ActionFailed(f"{problem}; {undo}")
    book.save(replace(book.owned, kernel_args=act.add, backend=act.layout.value))
    return f"next boot: {' '.join(act.add) or '(no pmemd arguments)'}"


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
    pending = st.PendingReboot(since=datetime.now().isoformat(timespec="seconds"), boot_id=act.boot_id,
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

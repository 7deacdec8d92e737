"""The executor: the only place that changes the host. One function per action type.

``apply`` carries out a plan; ``--dry-run`` goes through exactly the same code and skips only
the side effects (commands that change something, file writes). Each namespace's chain stops at
its first failure; an action not tied to a namespace stops the pass. Every action is journalled
and the state file is saved (atomically) after each one, so an apply killed at any point leaves
a state the next apply converges from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pmemd import observe as obs
from pmemd import state as st
from pmemd.bootloader import BackendError, Tools, get_backend
from pmemd.config import Loaded
from pmemd.engine import Assessment, Target, assess
from pmemd.facts import MountEntry
from pmemd.fsroot import Root
from pmemd.journal import ERR, INFO, NOTICE, WARNING, Journal
from pmemd.model import RebootPolicy
from pmemd.parse import parse_blkid_export
from pmemd.plan import Action, Kind, Plan
from pmemd.runner import Result, Runner

REBOOT_REQUIRED = "/run/reboot-required"
REBOOT_PKGS = "/run/reboot-required.pkgs"
STATX_ATTR_DAX = 0x00200000
DAX_PROBE = ".pmemd-dax-probe"


class ActionFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: str  # ok | failed | skipped | dry-run
    message: str = ""


@dataclass
class Ctx:
    target: Target
    runner: Runner
    journal: Journal
    dry_run: bool
    a: Assessment
    owned: st.Owned
    log: list[str] = field(default_factory=list)  # side effects (what a dry run would do)

    @property
    def root(self) -> Root:
        return self.target.root

    def host(self, path: str) -> str:
        """A host path as the tools on this machine must see it (below --root)."""
        return str(self.root.join(path))

    def run(self, argv: Sequence[str], *, effect: bool = True, in_root: bool = False,
            timeout: float = 300.0) -> Result:
        """Run a command. Boot-loader and system tools act on the root's own files, so below a
        --root they run chrooted into it; device tools get root-joined paths instead."""
        args = list(argv)
        if in_root and not self.root.is_host:
            args = ["chroot", str(self.root.prefix), *args]
        if effect:
            self.log.append("run: " + " ".join(args))
            if self.dry_run:
                return Result(tuple(args), 0, "", "")
        return self.runner.run(args, timeout=timeout)

    def write(self, path: str, text: str) -> None:
        self.log.append(f"write: {path}")
        if not self.dry_run:
            self.root.write_atomic(path, text)

    def remove(self, path: str) -> None:
        if self.root.exists(path):
            self.log.append(f"remove: {path}")
            if not self.dry_run:
                self.root.write_atomic(path + "~pmemd", self.root.read_text(path) or "", backup=False)
                self.root.remove(path)

    def save(self, owned: st.Owned) -> None:
        self.owned = owned
        if not self.dry_run:
            self.root.write_atomic(st.STATE_FILE, st.dumps(owned), mode=0o644, backup=False)


# --- actions -------------------------------------------------------------------------------


def _set_kernel_args(ctx: Ctx, act: Action) -> str:
    layout = ctx.a.facts.boot.layout
    try:
        backend = get_backend(layout)
    except BackendError as exc:
        raise ActionFailed(str(exc)) from None
    written: list[tuple[str, bool]] = []

    def write(path: str, text: str) -> None:
        written.append((path, ctx.root.exists(path)))
        ctx.write(path, text)

    def remove(path: str) -> None:
        written.append((path, ctx.root.exists(path)))
        ctx.remove(path)

    def restore(path: str, existed: bool) -> None:
        if not ctx.dry_run:
            ctx.root.restore_backup(path, existed=existed)

    tools = Tools(ctx.root, lambda argv: ctx.run(argv, in_root=True), write, remove, restore)
    # Record the namespaces first: if pmemd dies after the write, the next pass still knows
    # which tokens and ranges are its own.
    before = ctx.owned
    owned = before
    for v in ctx.a.plan.namespaces:
        if v.start is not None:
            prev = owned.namespaces.get(v.name)
            owned = owned.with_namespace(v.name, replace(prev, start=v.start, size=v.size) if prev
                                         else st.OwnedNamespace(start=v.start, size=v.size))
    ctx.save(replace(owned, kernel_args=tuple(dict.fromkeys((*owned.kernel_args, *act.add))),
                     backend=layout))
    def roll_back(regenerate: bool) -> str:
        """Put the backed-up files back. The state file forgets the new tokens only when the boot
        config is provably the old one again; otherwise they stay pmemd's, so it can remove them."""
        keep = f"pmemd keeps counting {' '.join(act.add)} as its own so it can remove them later"
        if not written:  # grubby edits its entries itself: nothing to put back
            return f"{layout} may have changed the entries part-way; {keep}"
        for path, existed in reversed(written):
            restore(path, existed)
        if regenerate:
            try:
                backend.regenerate(tools)
            except BackendError as exc:
                return f"the previous files were restored but regenerating failed ({exc}); {keep}"
        ctx.save(replace(ctx.owned, kernel_args=before.kernel_args, backend=before.backend))
        return "the previous boot config was restored"

    try:
        backend.apply(tools, desired=act.add, remove=act.remove)
    except (BackendError, OSError) as exc:
        raise ActionFailed(f"{layout}: {exc}; {roll_back(regenerate=False)}") from None
    if not ctx.dry_run:
        boot = obs.read_boot_config(ctx.root, layout)
        args = set(boot.default_args or ())
        missing = [t for t in act.add if t not in args]
        left = [t for t in act.remove if t in args and t not in act.add]
        if missing or left:
            raise ActionFailed(
                "read-back of the next-boot arguments does not match: "
                + (f"missing {' '.join(missing)} " if missing else "")
                + (f"still has {' '.join(left)} " if left else "")
                + f"(default entry: {' '.join(boot.default_args or ()) or 'none'}); {roll_back(regenerate=True)}")
    ctx.save(replace(ctx.owned, kernel_args=act.add, backend=layout))
    return f"next boot: {' '.join(act.add) or '(no pmemd arguments)'}"


def _flag_reboot(ctx: Ctx) -> None:
    ctx.log.append(f"touch: {REBOOT_REQUIRED}")
    listed = "pmemd" in (ctx.root.read_text(REBOOT_PKGS) or "").split()
    if not listed:
        ctx.log.append(f"append: {REBOOT_PKGS} pmemd")
    if not ctx.dry_run:
        ctx.root.touch(REBOOT_REQUIRED)
        if not listed:
            ctx.root.append_line(REBOOT_PKGS, "pmemd")


def _next_elapse(ctx: Ctx, window: str) -> datetime:
    res = ctx.run(["systemd-analyze", "calendar", "--iterations=1", window], effect=False, in_root=True)
    m = re.search(r"Next elapse: \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", res.stdout)
    if not res.ok or not m:
        raise ActionFailed(f"settings.reboot_window {window!r} is not a calendar expression systemd "
                           f"understands: {res.describe()}")
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")


def _systemctl_has_when(ctx: Ctx) -> bool:
    return "--when" in ctx.run(["systemctl", "--help"], effect=False, in_root=True).stdout


def _reboot(ctx: Ctx, act: Action) -> str:
    policy = ctx.a.loaded.config.settings.reboot
    pending = st.PendingReboot(since=datetime.now().isoformat(timespec="seconds"),
                               boot_id=ctx.a.facts.boot_id, reason=act.reason, added=act.add,
                               removed=act.remove)
    if policy is RebootPolicy.NEVER:
        ctx.save(replace(ctx.owned, pending_reboot=pending))
        return "reboot needed; not flagged (reboot: never)"
    _flag_reboot(ctx)
    if policy is RebootPolicy.SCHEDULE:
        when = _next_elapse(ctx, act.path or "")
        if _systemctl_has_when(ctx):
            res = ctx.run(["systemctl", "reboot", f"--when={when:%Y-%m-%d %H:%M:%S}"], in_root=True)
        else:
            minutes = max(1, math.ceil((when - datetime.now()).total_seconds() / 60))
            res = ctx.run(["shutdown", "-r", f"+{minutes}", "pmemd: memmap= changed"], in_root=True)
        if not res.ok:
            raise ActionFailed(f"scheduling the reboot failed: {res.describe()}")
        ctx.save(replace(ctx.owned, pending_reboot=replace(pending, scheduled_for=when.isoformat())))
        return f"reboot scheduled for {when:%Y-%m-%d %H:%M}"
    ctx.save(replace(ctx.owned, pending_reboot=pending))
    if policy is RebootPolicy.NOW:
        res = ctx.run(["systemctl", "reboot"], in_root=True)
        if not res.ok:
            raise ActionFailed(f"systemctl reboot failed: {res.describe()}")
        return "rebooting now (reboot: now)"
    return f"reboot flagged in {REBOOT_REQUIRED}"


def _clear_reboot(ctx: Ctx, act: Action) -> str:
    pending = ctx.owned.pending_reboot
    if pending and pending.scheduled_for and pending.boot_id == ctx.a.facts.boot_id:
        if _systemctl_has_when(ctx):
            ctx.run(["systemctl", "reboot", "--when=cancel"], in_root=True)
        else:
            ctx.run(["shutdown", "-c"], in_root=True)
    pkgs = [p for p in (ctx.root.read_text(REBOOT_PKGS) or "").split() if p]
    done = "cleared"
    if "pmemd" in pkgs:
        rest = [p for p in pkgs if p != "pmemd"]
        if rest:
            ctx.write(REBOOT_PKGS, "\n".join(rest) + "\n")
            done += f"; {REBOOT_REQUIRED} kept for {' '.join(rest)}"
        else:
            ctx.remove(REBOOT_PKGS)
            ctx.remove(REBOOT_REQUIRED)
            done += f"; {REBOOT_REQUIRED} removed"
    ctx.save(replace(ctx.owned, pending_reboot=None))
    return done


def _set_mode(ctx: Ctx, act: Action) -> str:
    if not (obs.has_tool(ctx.root, "ndctl") if not ctx.root.is_host else ctx.runner.which("ndctl")):
        raise ActionFailed(f"ndctl is needed to change the mode of {act.device} "
                           "(apt install ndctl / dnf install ndctl)")
    res = ctx.run(act.args, in_root=True, timeout=120)
    if not res.ok:
        raise ActionFailed(res.describe())
    return f"{act.device} is now {act.args[-1].removeprefix('--mode=')}"


def _uuid_args(fstype: str | None, fs_uuid: str) -> list[str]:
    return ["-m", f"uuid={fs_uuid}"] if fstype == "xfs" else ["-U", fs_uuid]


def _mkfs(ctx: Ctx, act: Action) -> str:
    assert act.device and act.namespace
    dev = ctx.host(act.device)
    # Look again right before formatting: the plan may be seconds old.
    sig = obs.probe_signature(ctx.root, ctx.runner, act.device)
    prev = ctx.owned.namespaces.get(act.namespace) or st.OwnedNamespace(start=0, size=0)
    if act.reason == "redo":
        if not (prev.filesystem and not prev.filesystem.complete and sig.get("UUID") == prev.filesystem.uuid):
            raise ActionFailed(f"{act.device} no longer holds pmemd's unfinished filesystem "
                               f"({sig.describe()}); not formatting it")
    elif act.reason != "wipe" and not sig.blank:
        raise ActionFailed(f"{act.device} is no longer blank ({sig.describe()}); not formatting it")
    # The UUID is chosen and recorded (as unfinished) before mkfs runs: if pmemd dies during or
    # right after mkfs, the next pass recognises the filesystem as its own unfinished one and
    # makes it again, instead of refusing it as foreign data or mounting a half-written one.
    # A redo keeps the unfinished UUID: killed again before the new mkfs, the device still holds
    # the UUID the state file names, so the next pass can redo it once more.
    fs_uuid = prev.filesystem.uuid if act.reason == "redo" and prev.filesystem else str(uuid.uuid4())
    made = st.OwnedFs(uuid=fs_uuid, type=act.fstype or "", label=act.fslabel, complete=False)
    ctx.save(ctx.owned.with_namespace(act.namespace, replace(prev, filesystem=made)))
    if act.reason in ("wipe", "redo"):
        res = ctx.run(["wipefs", "-a", dev])
        if not res.ok:
            raise ActionFailed(res.describe())
    res = ctx.run([*act.args[:-1], *_uuid_args(act.fstype, fs_uuid), dev], timeout=600)
    if not res.ok:
        raise ActionFailed(res.describe())
    if ctx.dry_run:
        return f"would create {act.fstype} on {act.device}"
    probe = ctx.run(["blkid", "-p", "-o", "export", dev], effect=False)
    found = dict(parse_blkid_export(probe.stdout)).get("UUID")
    if found != fs_uuid:
        raise ActionFailed(f"mkfs ran but blkid finds UUID {found or 'none'} on {act.device}, not {fs_uuid}")
    ns = ctx.owned.namespaces.get(act.namespace) or prev
    ctx.save(ctx.owned.with_namespace(act.namespace, replace(ns, filesystem=replace(made, complete=True))))
    return f"{act.fstype} UUID={fs_uuid} on {act.device}"


def _mkdir(ctx: Ctx, act: Action) -> str:
    assert act.path
    links = ctx.root.symlinks_on_path(act.path)
    if links:
        raise ActionFailed(f"{', '.join(links)} is a symlink; refusing to create {act.path} through it")
    ctx.log.append(f"mkdir: {act.path}")
    if not ctx.dry_run:
        ctx.root.mkdir(act.path)
    return f"created {act.path}"


def _mount(ctx: Ctx, act: Action) -> str:
    assert act.device and act.path and act.namespace
    links = ctx.root.symlinks_on_path(act.path)
    if links:
        raise ActionFailed(f"{', '.join(links)} is a symlink; refusing to mount on {act.path}")
    # Recorded first, so a mount left behind by a pmemd killed before verify-dax is known as
    # pmemd's and can be unmounted by the next pass.
    prev = ctx.owned.namespaces.get(act.namespace) or st.OwnedNamespace(start=0, size=0)
    ctx.save(ctx.owned.with_namespace(act.namespace, replace(prev, mount_path=act.path)))
    res = ctx.run(["mount", "-t", act.fstype or "auto", "-o", ",".join(act.args),
                   ctx.host(act.device), ctx.host(act.path)], timeout=120)
    if not res.ok:
        ctx.save(ctx.owned.with_namespace(act.namespace, prev))
        hint = ""
        if any(o.startswith("dax") for o in act.args):
            hint = (f"; the kernel refused the DAX mount (see `dmesg | tail`): {act.device} must be a "
                    "pmem device in fsdax mode, and the filesystem's block size must equal the page size")
        raise ActionFailed(res.describe() + hint)
    return f"mounted {act.device} on {act.path}"


def statx_dax(path: str) -> bool | None:
    """STATX_ATTR_DAX of a file via glibc's statx(); None when statx cannot tell."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if not hasattr(libc, "statx"):
        return None
    buf = ctypes.create_string_buffer(256)
    at_fdcwd, at_symlink_nofollow, statx_basic = -100, 0x100, 0x7FF
    rc = libc.statx(at_fdcwd, os.fsencode(path), at_symlink_nofollow, statx_basic, buf)
    if rc != 0:
        return None
    attributes = int.from_bytes(buf.raw[8:16], "little")
    mask = int.from_bytes(buf.raw[56:64], "little")
    if not mask & STATX_ATTR_DAX:
        return None
    return bool(attributes & STATX_ATTR_DAX)


def _live_mount(ctx: Ctx, path: str) -> MountEntry | None:
    mounts = obs.read_mounts(ctx.root)
    found = None
    for m in mounts:
        if m.mount_point == path:
            found = m
    return found


def _verify_dax(ctx: Ctx, act: Action) -> str:
    assert act.path and act.namespace
    if ctx.dry_run:
        return f"would verify DAX on {act.path}"
    m = _live_mount(ctx, act.path)
    problem = None
    if m is None:
        problem = f"{act.path} is not mounted"
    elif not m.dax:
        problem = (f"{act.path} is mounted without DAX ({','.join(m.super_options)}); xfs silently "
                   "turns DAX off when the device cannot do it")
    elif "ro" in m.options:
        return f"DAX verified on {act.path} from mountinfo (read-only: no probe file)"
    else:
        probe = ctx.host(f"{act.path}/{DAX_PROBE}")
        with open(probe, "w") as f:
            f.write("pmemd\n")
        try:
            dax = statx_dax(probe)
        finally:
            os.unlink(probe)
        if dax is False:
            problem = f"a file on {act.path} does not have STATX_ATTR_DAX"
    if problem is None:
        return f"DAX verified on {act.path}"
    if m is not None:
        res = ctx.run(["umount", ctx.host(act.path)])
        if res.ok:
            prev = ctx.owned.namespaces.get(act.namespace)
            if prev:
                ctx.save(ctx.owned.with_namespace(act.namespace, replace(prev, mount_path=None)))
            problem += "; pmemd unmounted it again"
    raise ActionFailed(problem)


def _unmount(ctx: Ctx, act: Action) -> str:
    assert act.path and act.namespace
    res = ctx.run(["umount", ctx.host(act.path)], timeout=120)
    if not res.ok:
        busy = "busy" in (res.stderr + res.stdout)
        raise ActionFailed(f"{act.path} is still in use; pmemd tries again on its next pass" if busy
                           else res.describe())
    prev = ctx.owned.namespaces.get(act.namespace)
    if prev:
        ctx.save(ctx.owned.with_namespace(act.namespace, replace(prev, mount_path=None)))
    return f"unmounted {act.path}"


def _forget(ctx: Ctx, act: Action) -> str:
    assert act.namespace
    ctx.save(ctx.owned.with_namespace(act.namespace, None))
    return f"{act.namespace} is no longer managed"


_HANDLERS = {
    Kind.SET_KERNEL_ARGS: _set_kernel_args,
    Kind.REBOOT: _reboot,
    Kind.CLEAR_REBOOT: _clear_reboot,
    Kind.SET_MODE: _set_mode,
    Kind.MKFS: _mkfs,
    Kind.MKDIR: _mkdir,
    Kind.MOUNT: _mount,
    Kind.VERIFY_DAX: _verify_dax,
    Kind.UNMOUNT: _unmount,
    Kind.FORGET: _forget,
}


# --- passes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PassResult:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    side_effects: tuple[str, ...]
    assessment: Assessment

    @property
    def failed(self) -> bool:
        return bool(self.plan.errors) or any(o.result == "failed" for o in self.outcomes)


def run_plan(ctx: Ctx) -> tuple[Outcome, ...]:
    outcomes: list[Outcome] = []
    stopped: set[str | None] = set()
    rebooting = False
    for act in ctx.a.plan.actions:
        if rebooting:
            outcomes.append(Outcome(act, "skipped", "the host is rebooting (reboot: now)"))
            continue
        if None in stopped or act.namespace in stopped:
            outcomes.append(Outcome(act, "skipped", "an earlier step failed"))
            continue
        try:
            message = _HANDLERS[act.kind](ctx, act)
        except (ActionFailed, OSError) as exc:
            outcomes.append(Outcome(act, "failed", str(exc)))
            stopped.add(act.namespace)
            ctx.journal.event(act.kind.value, f"{act.summary}: FAILED: {exc}", priority=ERR,
                              namespace=act.namespace, device=act.device, result="failed")
            continue
        result = "dry-run" if ctx.dry_run else "ok"
        outcomes.append(Outcome(act, result, message))
        rebooting = (act.kind is Kind.REBOOT and not ctx.dry_run
                     and ctx.a.loaded.config.settings.reboot is RebootPolicy.NOW)
        if not ctx.dry_run:
            prio = NOTICE if act.label.value != "live" else INFO
            ctx.journal.event(act.kind.value, f"{act.summary}: {message}", priority=prio,
                              namespace=act.namespace, device=act.device, result="ok")
    return tuple(outcomes)


def record_verification(ctx: Ctx) -> None:
    """Once per boot, record and journal whether each region came up as declared."""
    boot_id = ctx.a.facts.boot_id
    owned = ctx.owned
    changed = False
    for v in ctx.a.plan.namespaces:
        prev = owned.namespaces.get(v.name)
        if prev is None or v.running in ("declared", "configured"):
            continue
        verdict = "failed: " + "; ".join(v.diagnosis) if v.running == "failed" else "applied"
        if prev.verified == verdict and prev.verified_boot_id == boot_id:
            continue
        owned = owned.with_namespace(v.name, replace(prev, verified=verdict, verified_boot_id=boot_id))
        changed = True
        if not ctx.dry_run:
            ctx.journal.event("verify-region", f"{v.name}: {v.token} {verdict}",
                              priority=ERR if v.running == "failed" else INFO, namespace=v.name,
                              device=v.device, result="failed" if v.running == "failed" else "ok")
    if changed:
        ctx.save(owned)


def apply_pass(target: Target, runner: Runner, journal: Journal, *, dry_run: bool,
               assessment: Assessment | None = None) -> PassResult:
    a = assessment or assess(target, runner)
    ctx = Ctx(target, runner, journal, dry_run, a, a.owned)
    for issue in a.plan.issues:
        if not dry_run:
            journal.event("pass", str(issue), priority=ERR if issue.severity == "error" else WARNING,
                          namespace=issue.namespace)
    record_verification(ctx)
    outcomes = run_plan(ctx) if not a.plan.errors or a.plan.actions else ()
    return PassResult(a.plan, outcomes, tuple(ctx.log), a)


def apply(target: Target, runner: Runner, journal: Journal, *, dry_run: bool = False,
          max_passes: int = 4, loaded: Loaded | None = None) -> list[PassResult]:
    """Apply until the plan is empty, fails, or stops making progress (a mode change or a mkfs
    changes what the next observation sees, so one call can take more than one pass)."""
    results: list[PassResult] = []
    seen: set[tuple[tuple[str, str | None], ...]] = set()
    for _ in range(max_passes):
        r = apply_pass(target, runner, journal, dry_run=dry_run,
                       assessment=assess(target, runner, loaded) if loaded else None)
        results.append(r)
        key = tuple((a.kind.value, a.namespace) for a in r.plan.actions)
        if dry_run or r.failed or not r.plan.actions or key in seen:
            break
        if any(a.kind is Kind.REBOOT for a in r.plan.actions):
            break
        seen.add(key)
    return results

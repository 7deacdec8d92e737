"""The executor: carries out a plan, one handler per action type. Every change goes through the
``Effects`` object it is given (``effects``), so a dry run is this same code.

Each namespace's chain stops at its first failure; an action not tied to a namespace stops the
pass. Every action is journalled and the state file is saved (atomically) after each one, so an
apply killed at any point leaves a state the next apply converges from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from pmemd import state as st
from pmemd.actions import (
    Action,
    ArmTrial,
    ClearReboot,
    CommitTrial,
    EndTrial,
    FailTrial,
    Forget,
    Mkdir,
    Mkfs,
    Mount,
    Reboot,
    SetKernelArgs,
    SetMode,
    Unmount,
    VerifyDax,
)
from pmemd.diagnose import NamespaceView, Running, new_verdicts
from pmemd.effects import HostEffects
from pmemd.execute_boot import (
    ActionFailed,
    Book,
    arm_trial,
    clear_reboot,
    commit_trial,
    end_trial,
    reboot,
    set_kernel_args,
)
from pmemd.facts import MountEntry
from pmemd.frozen import frozen
from pmemd.journal import ERR, INFO, NOTICE
from pmemd.model import RebootPolicy
from pmemd.observe import probe_signature, read_mounts
from pmemd.parse import parse_blkid_export


class Result(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    DRY_RUN = "dry-run"


@frozen
class Outcome:
    action: Action
    result: Result
    message: str = ""


def _set_mode(act: SetMode, *, fx: HostEffects, book: Book) -> str:
    from pmemd.bootloader import has_tool

    if not has_tool(fx.root, "ndctl"):
        raise ActionFailed(f"ndctl is needed to change the mode of {act.nd_namespace} "
                           "(apt install ndctl / dnf install ndctl)")
    res = fx.run(["ndctl", "create-namespace", "-f", "-e", act.nd_namespace, f"--mode={act.mode}"],
                 chroot=True, timeout=120)
    if not res.ok:
        raise ActionFailed(res.describe())
    return f"{act.nd_namespace} is now {act.mode}"


def _mkfs_allowed(act: Mkfs, fx: HostEffects, prev: st.OwnedNamespace) -> None:
    """Look again right before formatting: the plan may be seconds old."""
    sig = probe_signature(fx.root, fx.runner, act.dev)
    if act.reason == "redo":
        if not (prev.filesystem and not prev.filesystem.complete and sig.get("UUID") == prev.filesystem.uuid):
            raise ActionFailed(f"{act.dev} no longer holds pmemd's unfinished filesystem "
                               f"({sig.describe()}); not formatting it")
    elif act.reason != "wipe" and not sig.blank:
        raise ActionFailed(f"{act.dev} is no longer blank ({sig.describe()}); not formatting it")


def _mkfs(act: Mkfs, *, fx: HostEffects, book: Book) -> str:
    import uuid

    dev = fx.host(act.dev)
    prev = book.owned.namespaces.get(act.ns) or st.OwnedNamespace(start=0, size=0)
    _mkfs_allowed(act, fx, prev)
    # The UUID is chosen and recorded (as unfinished) before mkfs runs: if pmemd dies during or
    # right after mkfs, the next pass recognises the filesystem as its own unfinished one and
    # makes it again, instead of refusing it as foreign data or mounting a half-written one.
    # A redo keeps the unfinished UUID: killed again before the new mkfs, the device still holds
    # the UUID the state file names, so the next pass can redo it once more.
    fs_uuid = prev.filesystem.uuid if act.reason == "redo" and prev.filesystem else str(uuid.uuid4())
    made = st.OwnedFs(uuid=fs_uuid, type=act.fstype, label=act.fslabel, complete=False)
    book.save(book.owned.with_namespace(act.ns, replace(prev, filesystem=made)))
    if act.reason in ("wipe", "redo"):
        res = fx.run(["wipefs", "-a", dev])
        if not res.ok:
            raise ActionFailed(res.describe())
    uuid_args = ["-m", f"uuid={fs_uuid}"] if act.fstype == "xfs" else ["-U", fs_uuid]
    res = fx.run([*act.argv, *uuid_args, dev], timeout=600)
    if not res.ok:
        raise ActionFailed(res.describe())

    def readback() -> str | None:
        found = dict(parse_blkid_export(fx.query(["blkid", "-p", "-o", "export", dev]).stdout)).get("UUID")
        if found == fs_uuid:
            return None
        return f"mkfs ran but blkid finds UUID {found or 'none'} on {act.dev}, not {fs_uuid}"

    problem = fx.confirm(f"blkid reads UUID {fs_uuid} on {act.dev}", readback)
    if problem:
        raise ActionFailed(problem)
    ns = book.owned.namespaces.get(act.ns) or prev
    book.save(book.owned.with_namespace(act.ns, replace(ns, filesystem=replace(made, complete=True))))
    return f"{act.fstype} UUID={fs_uuid} on {act.dev}"


def _no_symlinks(fx: HostEffects, path: str, doing: str, how: str = "") -> None:
    links = fx.root.symlinks_on_path(path)
    if links:
        raise ActionFailed(f"{', '.join(links)} is a symlink; refusing to {doing} {path}{how}")


def _mkdir(act: Mkdir, *, fx: HostEffects, book: Book) -> str:
    _no_symlinks(fx, act.path, "create", " through it")
    fx.mkdir(act.path)
    return f"created {act.path}"


def _mount(act: Mount, *, fx: HostEffects, book: Book) -> str:
    _no_symlinks(fx, act.path, "mount on")
    # Recorded first, so a mount left behind by a pmemd killed before verify-dax is known as
    # pmemd's and can be unmounted by the next pass.
    prev = book.owned.namespaces.get(act.ns) or st.OwnedNamespace(start=0, size=0)
    book.save(book.owned.with_namespace(act.ns, replace(prev, mount_path=act.path)))
    res = fx.run(["mount", "-t", act.fstype, "-o", ",".join(act.options), fx.host(act.dev), fx.host(act.path)],
                 timeout=120)
    if not res.ok:
        book.save(book.owned.with_namespace(act.ns, prev))
        raise ActionFailed(res.describe() + f"; the kernel refused the DAX mount (see `dmesg | tail`): {act.dev} "
                           "must be a pmem device in fsdax mode, and the filesystem's block size must equal the "
                           "page size")
    return f"mounted {act.dev} on {act.path}"


def _mount_at(fx: HostEffects, path: str) -> MountEntry | None:
    found = [m for m in read_mounts(fx.root) if m.mount_point == path]
    return found[-1] if found else None  # the last one is on top


def _dax_problem(fx: HostEffects, path: str) -> str | None:
    m = _mount_at(fx, path)
    if m is None:
        return f"{path} is not mounted"
    if not m.dax:
        return (f"{path} is mounted without DAX ({','.join(m.super_options)}); xfs silently turns DAX off when "
                "the device cannot do it")
    if "ro" not in m.options and fx.probe_dax(path) is False:
        return f"a file on {path} does not have STATX_ATTR_DAX"
    return None


def _verify_dax(act: VerifyDax, *, fx: HostEffects, book: Book) -> str:
    problem = fx.confirm(f"DAX on {act.path} (mountinfo and STATX_ATTR_DAX)", lambda: _dax_problem(fx, act.path))
    m = _mount_at(fx, act.path)
    if problem is None:
        ro = m is not None and "ro" in m.options
        return f"DAX verified on {act.path}" + (" from mountinfo (read-only: no probe file)" if ro else "")
    if m is not None and fx.run(["umount", fx.host(act.path)]).ok:
        prev = book.owned.namespaces.get(act.ns)
        if prev:
            book.save(book.owned.with_namespace(act.ns, replace(prev, mount_path=None)))
        problem += "; pmemd unmounted it again"
    raise ActionFailed(problem)


def _unmount(act: Unmount, *, fx: HostEffects, book: Book) -> str:
    res = fx.run(["umount", fx.host(act.path)], timeout=120)
    if not res.ok:
        busy = "busy" in (res.stderr + res.stdout)
        raise ActionFailed(f"{act.path} is still in use; pmemd tries again on its next pass" if busy
                           else res.describe())
    prev = book.owned.namespaces.get(act.ns)
    if prev:
        book.save(book.owned.with_namespace(act.ns, replace(prev, mount_path=None)))
    return f"unmounted {act.path}"


def _forget(act: Forget, *, fx: HostEffects, book: Book) -> str:
    book.save(book.owned.with_namespace(act.ns, None))
    return f"{act.ns} is no longer managed"


_HANDLERS: dict[type[Any], Callable[..., str]] = {
    SetKernelArgs: set_kernel_args, Reboot: reboot, ClearReboot: clear_reboot, SetMode: _set_mode,
    Mkfs: _mkfs, Mkdir: _mkdir, Mount: _mount, VerifyDax: _verify_dax, Unmount: _unmount, Forget: _forget,
    ArmTrial: arm_trial, CommitTrial: commit_trial, FailTrial: end_trial, EndTrial: end_trial,
}


def handle(act: Action, *, fx: HostEffects, book: Book) -> str:
    """Carry out one action (each type has one handler); its result message, or ActionFailed."""
    return _HANDLERS[type(act)](act, fx=fx, book=book)


def _skip_reason(act: Action, stopped: set[str | None], rebooting: bool) -> str | None:
    if rebooting:
        return "the host is rebooting (reboot: now)"
    if None in stopped or act.namespace in stopped:
        return "an earlier step failed"
    return None


def run_plan(actions: tuple[Action, ...], *, fx: HostEffects, book: Book) -> tuple[Outcome, ...]:
    outcomes: list[Outcome] = []
    stopped: set[str | None] = set()
    rebooting = False
    done = Result.DRY_RUN if fx.recording else Result.OK
    for act in actions:
        skip = _skip_reason(act, stopped, rebooting)
        if skip:
            outcomes.append(Outcome(act, Result.SKIPPED, skip))
            continue
        started = time.monotonic()
        try:
            message = handle(act, fx=fx, book=book)
        except (ActionFailed, OSError) as exc:
            outcomes.append(Outcome(act, Result.FAILED, str(exc)))
            stopped.add(act.namespace)
            fx.event(act.kind.value, f"{act.summary}: FAILED: {exc}", priority=ERR, namespace=act.namespace,
                     device=act.device, result="failed", seconds=f"{time.monotonic() - started:.3f}")
            continue
        outcomes.append(Outcome(act, done, message))
        rebooting = isinstance(act, Reboot) and act.policy is RebootPolicy.NOW and not fx.recording
        fx.event(act.kind.value, f"{act.summary}: {message}", priority=NOTICE if act.label.value != "live" else INFO,
                 namespace=act.namespace, device=act.device, result="ok",
                 seconds=f"{time.monotonic() - started:.3f}")
    return tuple(outcomes)


def record_verification(views: tuple[NamespaceView, ...], boot_id: str | None, *, fx: HostEffects,
                        book: Book) -> None:
    """Once per boot, record and journal whether each region came up as declared."""
    owned = book.owned
    for v, verdict in new_verdicts(views, owned, boot_id):
        prev = owned.namespaces[v.name]
        owned = owned.with_namespace(v.name, replace(prev, verified=verdict, verified_boot_id=boot_id))
        failed = v.running is Running.FAILED
        fx.event("verify-region", f"{v.name}: {v.token} {verdict}", priority=ERR if failed else INFO,
                 namespace=v.name, device=v.device, result="failed" if failed else "ok")
    if owned is not book.owned:
        book.save(owned)

"""The planner: ``(config, facts, owned) -> Plan``. Pure.

A plan is an ordered tuple of actions (boot arguments → reboot gate → namespace mode → mkfs →
mkdir → mount → verify DAX → clean-up), each labelled ``live``, ``needs-reboot`` or
``destructive``, plus issues and a per-namespace view of desired / configured / running. It is
empty when the host matches the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pmemd.facts import HostFacts, MountEntry, NdNamespace, NdRegion
from pmemd.model import Config, FsType, Namespace, OnForeignData, RebootPolicy
from pmemd.parse import parse_cmdline
from pmemd.state import Owned
from pmemd.validate import Issue, Placement, kaslr_token, validate


class Label(StrEnum):
    LIVE = "live"
    NEEDS_REBOOT = "needs-reboot"
    DESTRUCTIVE = "destructive"


class Kind(StrEnum):
    SET_KERNEL_ARGS = "set-kernel-args"
    REBOOT = "reboot"
    CLEAR_REBOOT = "clear-reboot"
    SET_MODE = "set-mode"
    MKFS = "mkfs"
    MKDIR = "mkdir"
    MOUNT = "mount"
    VERIFY_DAX = "verify-dax"
    UNMOUNT = "unmount"
    FORGET = "forget"


@dataclass(frozen=True)
class Action:
    kind: Kind
    label: Label
    summary: str
    namespace: str | None = None
    device: str | None = None
    # Parameters the executor needs; strings and tuples only, so a plan prints as JSON.
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    path: str | None = None
    fstype: str | None = None
    fslabel: str | None = None
    args: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class NamespaceView:
    name: str
    start: int | None
    size: int
    token: str | None
    placement: str  # why this range
    configured: bool  # token in the next-boot arguments
    running: str  # declared | configured | present | failed | formatted | mounted
    device: str | None = None
    mount: str | None = None
    dax: bool | None = None
    diagnosis: tuple[str, ...] = ()

    @property
    def device_pending(self) -> bool:
        """The region is booted but the kernel has not (yet) made its device: drivers are still
        probing early in boot, or the probe failed. Worth looking again soon."""
        return self.running == "failed" and any(d.endswith(DEVICE_PENDING) for d in self.diagnosis)


DEVICE_PENDING = "(not probed yet, or the probe failed)"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    issues: tuple[Issue, ...]
    namespaces: tuple[NamespaceView, ...]
    desired_args: tuple[str, ...] = ()
    next_boot_args: tuple[str, ...] | None = None
    reboot_needed: bool = False
    notes: tuple[str, ...] = field(default=())
    after_reboot: tuple[str, ...] = ()  # what follows once the kernel has made the device

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.errors


def dax_option(kernel_release: str | None) -> str:
    """``dax=always`` since 5.8; the legacy ``dax`` before it."""
    return "dax" if _older_than(kernel_release, (5, 8)) else "dax=always"


def xfs_needs_reflink0(kernel_release: str | None) -> bool:
    """xfs refuses DAX with reflink before 6.0 (and on partitions); unknown kernels get it too."""
    return kernel_release is None or _older_than(kernel_release, (6, 0))


def _older_than(release: str | None, version: tuple[int, int]) -> bool:
    if not release:
        return False
    parts = release.split("-")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1])) < version
    except (ValueError, IndexError):
        return False


def mkfs_args(ns: Namespace, device: str, kernel_release: str | None) -> tuple[str, ...]:
    fs = ns.filesystem
    assert fs is not None
    if fs.type is FsType.EXT4:
        argv = ["mkfs.ext4", "-q", "-b", "4096"]
        if fs.label:
            argv += ["-L", fs.label]
    else:
        argv = ["mkfs.xfs", "-q", "-b", "size=4096"]
        if xfs_needs_reflink0(kernel_release):
            argv += ["-m", "reflink=0"]
        if fs.label:
            argv += ["-L", fs.label]
    return (*argv, *fs.options, device)


def region_for(facts: HostFacts, p: Placement) -> NdRegion | None:
    for r in facts.regions:
        if r.is_emulated and r.start == p.start and r.size == p.size:
            return r
    return None


_DEVICE_NAME = re.compile(r"\b((?:namespace|pfn|dax|btt)\d+\.\d+|pmem\d+(?:\.\d+)?s?)\b")
_MEM_RANGE = re.compile(r"\[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)")
_FS_DEVICE = re.compile(r"^[A-Za-z0-9_-]+ \((\S+?)\):")  # "EXT4-fs (loop0): ...", "XFS (pmem0): ..."


def _problems_of(facts: HostFacts, p: Placement, region: NdRegion | None) -> list[str]:
    """The kernel-log problems that concern this region.

    A message naming devices (``nd_pmem namespace2.0: …``, ``EXT4-fs (loop0): …``) or a memory
    range (``[mem 0x…-0x…]``) belongs to the region it names, or to the pieces the kernel split
    this range into: a DAX failure on some other disk or a misaligned foreign region must not fail
    this one. A message that names nothing (``.text .data .bss are not marked as
    E820_TYPE_RAM!``) could concern any region, so it stays.
    """
    names: set[str] = set()
    for r in facts.regions:  # this region, or the pieces the kernel made of its range
        if r is region or (r.start is not None and r.start < p.end and p.start < r.start + r.size):
            for ns in r.namespaces:
                names.update(x for x in (ns.name, ns.blockdev, ns.chardev, ns.holder) if x)
    out = []
    for msg in facts.kernel_log.problems:
        devices = set(_DEVICE_NAME.findall(msg))
        fs = _FS_DEVICE.match(msg)
        if fs:
            devices.add(fs.group(1))
        ranges = [(int(a, 16), int(b, 16) + 1) for a, b in _MEM_RANGE.findall(msg)]
        unattributed = not devices and not ranges
        if unattributed or devices & names or any(s < p.end and p.start < e for s, e in ranges):
            out.append(msg)
    return out


def _diagnose(facts: HostFacts, p: Placement, in_cmdline: bool) -> tuple[str, tuple[str, ...]]:
    """(running state, diagnosis) for a region the config declares. Rule 8 of DOMAIN.md."""
    if not in_cmdline:
        return "configured", ()
    notes: list[str] = []
    iomem = [e for e in facts.iomem_pmem if e.start < p.end and p.start < e.end]
    exact = [e for e in iomem if e.start == p.start and e.end == p.end and "legacy" in e.name]
    if not exact:
        if iomem:
            notes.append("the kernel changed the region: /proc/iomem has "
                         + ", ".join(f"{e.name} [{e.start:#x}-{e.end - 1:#x}]" for e in iomem)
                         + f" instead of [{p.start:#x}-{p.end - 1:#x}]")
        else:
            notes.append(f"{p.token} is on the command line but /proc/iomem has no Persistent Memory "
                         "(legacy) range there")
    region = region_for(facts, p)
    if region is None:
        unreadable = [r for r in facts.regions if r.is_emulated and r.start is None and r.size == p.size]
        if unreadable:
            notes.append("region addresses are unreadable (run as root)")
        elif not facts.regions or not any(r.is_emulated for r in facts.regions):
            notes.append(f"no e820 nvdimm region: is the nd_e820 module loaded? (modprobe nd_e820) {DEVICE_PENDING}")
        else:
            notes.append("no e820 nd region with this exact address and size")
    elif not any(ns.blockdev or ns.chardev for ns in region.namespaces):
        notes.append(f"{region.name} exists but its namespace has no device {DEVICE_PENDING}")
    notes.extend(_problems_of(facts, p, region))
    if notes:
        return "failed", tuple(notes)
    return "present", ()


def plan(config: Config, facts: HostFacts, owned: Owned) -> Plan:
    placements, issues = validate(config, facts, owned)
    actions: list[Action] = []
    views: list[NamespaceView] = []
    notes: list[str] = list(facts.boot.notes)
    if any(i.severity == "error" for i in issues):
        return Plan((), tuple(issues), (), notes=tuple(notes))

    for limit in facts.cmdline.limits:
        issues.append(Issue("warning", None, "", f"the running command line has {limit}, which limits "
                            "usable RAM (a memmap= without a valid !/@/#/$ acts as mem=)"))
    # --- kernel arguments --------------------------------------------------------------------
    kaslr, kaslr_why = kaslr_token(config, facts)
    desired = tuple(p.token for p in sorted(placements.values(), key=lambda p: p.start))
    if kaslr:
        desired = (*desired, kaslr)
    if kaslr and placements:
        notes.append(f"nokaslr: {kaslr_why}")
    next_args = facts.boot.default_args
    running = set(facts.cmdline.tokens)
    if next_args is None:
        if config.namespaces:
            issues.append(Issue("error", None, "settings.bootloader",
                                f"cannot read the next-boot kernel arguments (layout "
                                f"{facts.boot.layout}: {facts.boot.detected_by}); set "
                                "settings.bootloader if detection is wrong"))
        next_set: set[str] = set()
    else:
        next_set = set(next_args)
        for e in parse_cmdline(" ".join(next_args)).limits:
            issues.append(Issue("error", None, "", f"the next-boot arguments contain {e}, which would "
                                "limit usable RAM; fix the boot configuration by hand"))
    # A desired token that the boot config already carries from elsewhere (the user's own
    # /etc/default/grub, a lost state file) is left where it is: writing it again would
    # duplicate it, and pmemd never takes over or removes arguments it did not write.
    supplied = next_set - set(owned.kernel_args) - set(facts.boot.owned_tokens)
    desired = tuple(t for t in desired if t not in supplied)
    for t in sorted(supplied & set(p.token for p in placements.values())):
        notes.append(f"{t} is already in the boot config, set outside pmemd; pmemd uses it as it is")
    to_add = tuple(t for t in desired if t not in next_set)
    stale_owned = tuple(t for t in owned.kernel_args if t not in desired)
    to_remove = tuple(t for t in stale_owned if t in next_set or t in facts.boot.owned_tokens)
    if facts.boot.layout == "grubby" and to_add and next_args is not None:
        foreign = [e.token for e in parse_cmdline(" ".join(next_args)).memmap
                   if e.token not in owned.kernel_args and e.token not in desired]
        if foreign:
            issues.append(Issue("error", None, "namespaces",
                                f"the boot entries carry {' '.join(dict.fromkeys(foreign))}, which pmemd "
                                "did not set; grubby drops every memmap= of an entry when one is added, so "
                                "pmemd will not add its own. Remove it (grubby --update-kernel=ALL "
                                "--remove-args=memmap) or declare it as a namespace in pmem.yaml"))
    owned_file_ok = set(facts.boot.owned_tokens) == set(desired) or facts.boot.owned_file is None
    if next_args is not None and (to_add or to_remove or not owned_file_ok):
        if facts.boot.layout == "unknown":
            issues.append(Issue("error", None, "settings.bootloader",
                                "no supported boot loader found (GRUB on Debian/Ubuntu, grubby, "
                                "grub2-mkconfig, systemd-boot); set settings.bootloader"))
        else:
            parts = ([f"add {' '.join(to_add)}"] if to_add else []) + (
                [f"remove {' '.join(to_remove)}"] if to_remove else [])
            actions.append(Action(
                Kind.SET_KERNEL_ARGS, Label.NEEDS_REBOOT,
                f"boot config ({facts.boot.layout}): " + ("; ".join(parts) or "rewrite pmemd's tokens"),
                add=desired, remove=stale_owned, reason=facts.boot.detected_by))
    after_next = (next_set | set(desired)) - set(stale_owned)
    pmemd_tokens = tuple(dict.fromkeys((*desired, *owned.kernel_args)))  # in boot-config order
    reboot_add = tuple(t for t in pmemd_tokens if t in after_next and t not in running)
    reboot_remove = tuple(t for t in pmemd_tokens if t not in after_next and t in running)
    reboot_needed = bool(reboot_add or reboot_remove)
    pending = owned.pending_reboot
    policy = config.settings.reboot
    if reboot_needed:
        reason = "; ".join(filter(None, [
            f"{' '.join(reboot_add)} added" if reboot_add else "",
            f"{' '.join(reboot_remove)} removed" if reboot_remove else ""]))
        same = pending is not None and set(pending.added) == set(reboot_add) and set(
            pending.removed) == set(reboot_remove) and (policy is not RebootPolicy.SCHEDULE
                                                         or pending.scheduled_for is not None)
        if not same:
            what = {
                RebootPolicy.NEVER: "record that a reboot is needed (reboot: never)",
                RebootPolicy.FLAG: "flag a pending reboot (/run/reboot-required)",
                RebootPolicy.SCHEDULE: f"schedule a reboot at {config.settings.reboot_window}",
                RebootPolicy.NOW: "reboot now",
            }[policy]
            actions.append(Action(Kind.REBOOT, Label.NEEDS_REBOOT, f"{what}: {reason}",
                                  add=reboot_add, remove=reboot_remove, reason=reason,
                                  path=config.settings.reboot_window))
    elif pending is not None:
        why = ("the reboot happened and the arguments are in effect" if pending.boot_id != facts.boot_id
               else "the config returned to the booted state")
        actions.append(Action(Kind.CLEAR_REBOOT, Label.LIVE, f"clear the pending reboot: {why}",
                              reason=why))

    # --- namespaces that exist in the config ---------------------------------------------------
    after: list[str] = []
    mount_paths = {n: ns.mount.path for n, ns in config.namespaces.items() if ns.mount}
    for name, path in mount_paths.items():
        for other, opath in mount_paths.items():
            if other != name and path.startswith(opath + "/"):
                issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                                    f"{path} is inside namespace {other}'s mount {opath}; "
                                    "choose a path outside it"))
    for name in sorted(config.namespaces, key=lambda n: placements[n].start):
        ns = config.namespaces[name]
        p = placements[name]
        chain, view = _namespace_chain(name, ns, p, facts, owned, p.token in next_set,
                                       p.token in running, issues)
        actions.extend(chain)
        views.append(view)
        if view.running in ("declared", "configured"):
            after.extend(_after_reboot(name, ns, p, facts))

    # --- namespaces pmemd owns that left the config ------------------------------------------
    for name, o in sorted(owned.namespaces.items()):
        if name in config.namespaces:
            continue
        mounted = facts.mount_at(o.mount_path) if o.mount_path else None
        if mounted is not None:
            actions.append(Action(Kind.UNMOUNT, Label.LIVE,
                                  f"{name}: unmount {o.mount_path} (namespace removed from the config)",
                                  namespace=name, path=o.mount_path, device=mounted.source))
        else:
            actions.append(Action(Kind.FORGET, Label.LIVE, f"{name}: forget the removed namespace",
                                  namespace=name))
    # An error stops that namespace's chain; an error not tied to one namespace stops everything.
    failed = {i.namespace for i in issues if i.severity == "error"}
    if None in failed:
        actions = []
    elif failed:
        actions = [a for a in actions if a.namespace not in failed]
    return Plan(tuple(actions), tuple(issues), tuple(views), desired,
                tuple(next_args) if next_args is not None else None, reboot_needed, tuple(notes),
                tuple(after))


def _after_reboot(name: str, ns: Namespace, p: Placement, facts: HostFacts) -> list[str]:
    where = f"the pmem device at [{p.start:#x}-{p.end - 1:#x}]"
    steps = [f"{name}: verify {where} (cmdline, /proc/iomem, e820 nd region, block device)"]
    if ns.mode.value != "fsdax":
        steps.append(f"{name}: set namespace mode {ns.mode.value} (ndctl create-namespace)")
    if ns.filesystem is not None:
        dev = "/dev/pmemN"
        argv = " ".join(mkfs_args(ns, dev, facts.kernel_release))
        steps.append(f"{name}: {argv} if it is blank (refuse foreign data)")
    if ns.mount is not None:
        opts = ",".join((dax_option(facts.kernel_release), *ns.mount.options))
        steps.append(f"{name}: mount on {ns.mount.path} ({opts}) and verify DAX")
    return steps


def _namespace_chain(name: str, ns: Namespace, p: Placement, facts: HostFacts, owned: Owned,
                     configured: bool, in_cmdline: bool, issues: list[Issue]) -> tuple[list[Action], NamespaceView]:
    if in_cmdline:
        state, diagnosis = _diagnose(facts, p, in_cmdline)
    else:
        state, diagnosis = ("configured" if configured else "declared"), ()
    view = NamespaceView(name, p.start, p.size, p.token, p.why, configured, state, diagnosis=diagnosis)
    if state == "failed":
        issues.append(Issue("error", name, f"namespaces.{name}",
                            f"region {p.token} did not come up as declared: " + "; ".join(diagnosis)))
        return [], view
    if state != "present":
        return [], view
    region = region_for(facts, p)
    assert region is not None
    nsdev = next(iter(region.namespaces), None)
    if nsdev is None:
        return [], view
    device = f"/dev/{nsdev.blockdev}" if nsdev.blockdev else None
    view = _with(view, device=device or (f"/dev/{nsdev.chardev}" if nsdev.chardev else None))
    mounts = facts.mounts_of(device, None) if device else ()
    actions: list[Action] = []
    if not _mode_matches(nsdev, ns.mode.value):
        if mounts:
            issues.append(Issue("error", name, f"namespaces.{name}.mode",
                                f"{device} is mounted at {mounts[0].mount_point} in mode "
                                f"{nsdev.pmemd_mode}; unmount it before pmemd changes the mode to "
                                f"{ns.mode.value}"))
            return [], view
        actions.append(Action(Kind.SET_MODE, Label.DESTRUCTIVE,
                              f"{name}: convert {nsdev.name} from {nsdev.pmemd_mode} to {ns.mode.value} "
                              "(erases the device)", namespace=name, device=nsdev.name,
                              args=("ndctl", "create-namespace", "-f", "-e", nsdev.name,
                                    f"--mode={ns.mode.value}")))
        return actions, view  # the device name can change; the next pass continues the chain
    if ns.filesystem is None or device is None:
        return actions, view
    return _fs_chain(name, ns, device, mounts, facts, owned, issues, view)


def _mode_matches(nsdev: NdNamespace, want: str) -> bool:
    """Whether the namespace already is in mode ``want``.

    An unclaimed label-less (memmap) namespace reads "memory" on kernels with ZONE_DEVICE, and
    ``ndctl create-namespace --mode=raw`` leaves it exactly so (DOMAIN.md, seen on 6.1): that is
    as raw as it gets. Converting it again would erase the device on every pass, forever.
    """
    if nsdev.pmemd_mode == want:
        return True
    return want == "raw" and nsdev.mode == "memory" and not nsdev.holder


def _with(view: NamespaceView, **changes: object) -> NamespaceView:
    return replace(view, **changes)  # type: ignore[arg-type]


def _fs_chain(name: str, ns: Namespace, device: str, mounts: tuple[MountEntry, ...], facts: HostFacts,
              owned: Owned, issues: list[Issue], view: NamespaceView) -> tuple[list[Action], NamespaceView]:
    assert ns.filesystem is not None
    actions: list[Action] = []
    target = ns.mount.path if ns.mount else None
    own = owned.namespaces.get(name)
    own_mount = own.mount_path if own else None
    if mounts:
        m = mounts[-1]
        view = _with(view, running="mounted", mount=m.mount_point, dax=m.dax)
        if target and m.mount_point != target:
            issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                                f"{device} is mounted at {m.mount_point}, not {target}; pmemd does not "
                                "move mounts it did not make: unmount it"))
        elif not m.dax and own_mount == m.mount_point:
            actions.append(Action(Kind.UNMOUNT, Label.LIVE,
                                  f"{name}: unmount {m.mount_point}: pmemd mounted it but it has no DAX "
                                  f"({','.join(m.super_options)}); mount it again with DAX",
                                  namespace=name, device=device, path=m.mount_point))
        elif not m.dax:
            issues.append(Issue("error", name, f"namespaces.{name}",
                                f"{device} is mounted at {m.mount_point} without DAX "
                                f"(options {','.join(m.super_options)}); unmount it and run pmemd apply"))
        elif m.fstype != ns.filesystem.type.value:
            issues.append(Issue("error", name, f"namespaces.{name}.filesystem.type",
                                f"{device} holds {m.fstype}, not {ns.filesystem.type.value}"))
        return actions, view
    sig = facts.signature(device)
    if sig is None or not sig.probed:
        issues.append(Issue("error", name, f"namespaces.{name}",
                            f"cannot tell what {device} holds: {sig.error if sig else 'not probed'}; "
                            "pmemd formats only devices it can prove blank"))
        return actions, view
    fstype, fslabel = ns.filesystem.type.value, ns.filesystem.label
    # the filesystem pmemd recorded making here, if the device carries its UUID
    mine = own.filesystem if own and own.filesystem and sig.get("UUID") == own.filesystem.uuid else None

    def mkfs(summary: str, reason: str = "") -> Action:
        return Action(Kind.MKFS, Label.DESTRUCTIVE, f"{name}: {summary}", namespace=name, device=device,
                      fstype=fstype, fslabel=fslabel, args=mkfs_args(ns, device, facts.kernel_release),
                      reason=reason)

    if mine and not mine.complete:
        actions.append(mkfs(f"mkfs.{fstype} on {device} again: pmemd's own mkfs there did not finish", "redo"))
    elif mine and mine.type == sig.get("TYPE") == fstype:
        view = _with(view, running="formatted")
    elif sig.blank:
        actions.append(mkfs(f"mkfs.{fstype} on blank {device} (emulated pmem is RAM: blank after every reboot)"))
    elif ns.on_foreign_data is OnForeignData.WIPE:
        actions.append(mkfs(f"WIPE {device} ({sig.describe()}) and mkfs.{fstype} (on_foreign_data: wipe)", "wipe"))
    elif mine and mine.type == sig.get("TYPE"):
        issues.append(Issue("error", name, f"namespaces.{name}.filesystem.type",
                            f"{device} holds the {mine.type} filesystem pmemd made, but the config "
                            f"now asks for {fstype}; pmemd does not reformat a filesystem "
                            f"that may hold data. Set namespaces.{name}.on_foreign_data: wipe to reformat it, "
                            "or reboot (emulated pmem comes back blank)"))
        return actions, view
    else:
        issues.append(Issue("error", name, f"namespaces.{name}.on_foreign_data",
                            f"{device} holds data pmemd did not write ({sig.describe()}); pmemd will not "
                            f"format it. Copy what you need, then set namespaces.{name}.on_foreign_data: "
                            "wipe (or wipe it yourself)"))
        return actions, view
    if target is None:
        return actions, view
    pf = facts.path(target)
    if pf is not None and pf.symlinks:
        issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                            f"{', '.join(pf.symlinks)} is a symlink; pmemd mounts only on real "
                            "directories so a link cannot redirect the mount"))
        return [], view
    other = facts.mount_at(target)
    if other is not None:
        issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                            f"{target} already has {other.source} ({other.fstype}) mounted; "
                            "unmount it or choose another path"))
        return [], view
    for oname, o in owned.namespaces.items():
        if oname != name and o.mount_path and target.startswith(o.mount_path + "/"):
            issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                                f"{target} is inside pmemd's mount {o.mount_path}; choose another path"))
            return [], view
    if pf is None or not pf.exists:
        actions.append(Action(Kind.MKDIR, Label.LIVE, f"{name}: create mount point {target}",
                              namespace=name, path=target))
    elif not pf.is_dir:
        issues.append(Issue("error", name, f"namespaces.{name}.mount.path",
                            f"{target} exists and is not a directory"))
        return [], view
    opts = (dax_option(facts.kernel_release), *(ns.mount.options if ns.mount else ()))
    actions.append(Action(Kind.MOUNT, Label.LIVE,
                          f"{name}: mount {device} on {target} ({','.join(opts)})", namespace=name,
                          device=device, path=target, fstype=ns.filesystem.type.value, args=opts))
    actions.append(Action(Kind.VERIFY_DAX, Label.LIVE,
                          f"{name}: verify DAX on {target} (mountinfo and STATX_ATTR_DAX)",
                          namespace=name, device=device, path=target))
    return actions, view


def region_by_device(facts: HostFacts, device: str) -> tuple[NdRegion, NdNamespace] | None:
    for r in facts.regions:
        for ns in r.namespaces:
            if ns.blockdev and f"/dev/{ns.blockdev}" == device:
                return r, ns
    return None

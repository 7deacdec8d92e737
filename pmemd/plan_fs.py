"""The planner's chain for one booted namespace: mode → mkfs → mkdir → mount → verify DAX. Pure.

Each step returns a ``Chain`` (its actions, its issues, the namespace's view so far); an issue
ends the chain, so nothing after it is planned for that namespace.
"""

from __future__ import annotations

from dataclasses import replace

from pmemd.actions import Action, Mkdir, Mkfs, MkfsReason, Mount, SetMode, Unmount, VerifyDax
from pmemd.diagnose import NamespaceView, Running, diagnose, region_for
from pmemd.facts import HostFacts, MountEntry, NdNamespace, Signature
from pmemd.frozen import frozen
from pmemd.model import FsType, Namespace, OnForeignData
from pmemd.state import Owned, OwnedFs
from pmemd.validate import Issue, Placement


@frozen
class Chain:
    view: NamespaceView
    actions: tuple[Action, ...] = ()
    issues: tuple[Issue, ...] = ()

    def then(self, *actions: Action) -> Chain:
        return replace(self, actions=(*self.actions, *actions))

    def stop(self, key: str, message: str) -> Chain:
        """End the chain with an error at ``namespaces.<name>[.key]``; its actions are dropped."""
        name = self.view.name
        full = f"namespaces.{name}" + (f".{key}" if key else "")
        return replace(self, actions=(), issues=(*self.issues, Issue("error", name, full, message)))


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


def mkfs_argv(ns: Namespace, kernel_release: str | None) -> tuple[str, ...]:
    """The mkfs command for a namespace, without the device (and the UUID pmemd adds)."""
    fs = ns.filesystem
    if fs is None:
        return ()
    if fs.type is FsType.EXT4:
        argv = ["mkfs.ext4", "-q", "-b", "4096"]
    else:
        argv = ["mkfs.xfs", "-q", "-b", "size=4096"]
        if xfs_needs_reflink0(kernel_release):
            argv += ["-m", "reflink=0"]
    if fs.label:
        argv += ["-L", fs.label]
    return (*argv, *fs.options)


def after_reboot(name: str, ns: Namespace, p: Placement, facts: HostFacts) -> list[str]:
    """What pmemd will do for a namespace once the kernel has made its device."""
    where = f"the pmem device at [{p.start:#x}-{p.end - 1:#x}]"
    steps = [f"{name}: verify {where} (cmdline, /proc/iomem, e820 nd region, block device)"]
    if ns.mode.value != "fsdax":
        steps.append(f"{name}: set namespace mode {ns.mode.value} (ndctl create-namespace)")
    if ns.filesystem is not None:
        argv = " ".join((*mkfs_argv(ns, facts.kernel_release), "/dev/pmemN"))
        steps.append(f"{name}: {argv} if it is blank (refuse foreign data)")
    if ns.mount is not None:
        opts = ",".join((dax_option(facts.kernel_release), *ns.mount.options))
        steps.append(f"{name}: mount on {ns.mount.path} ({opts}) and verify DAX")
    return steps


def namespace_chain(name: str, ns: Namespace, p: Placement, *, facts: HostFacts, owned: Owned) -> Chain:
    """The chain of one namespace of the config."""
    configured = p.token in (facts.boot.default_args or ())
    if p.token not in facts.cmdline.tokens:
        running = Running.CONFIGURED if configured else Running.DECLARED
        return Chain(NamespaceView(name=name, start=p.start, size=p.size, token=p.token, placement=p.why,
                                   configured=configured, running=running))
    running, diagnosis = diagnose(facts, p)
    chain = Chain(NamespaceView(name=name, start=p.start, size=p.size, token=p.token, placement=p.why,
                                configured=configured, running=running, diagnosis=diagnosis))
    if running is Running.FAILED:
        return chain.stop("", f"region {p.token} did not come up as declared: " + "; ".join(diagnosis))
    region = region_for(facts, p)
    nsdev = next(iter(region.namespaces), None) if region else None
    if nsdev is None:
        return chain
    device = f"/dev/{nsdev.blockdev}" if nsdev.blockdev else None
    chain = replace(chain, view=replace(chain.view, device=device or (f"/dev/{nsdev.chardev}" if nsdev.chardev
                                                                      else None)))
    mounts = facts.mounts_of(device, None) if device else ()
    if not _mode_matches(nsdev, ns.mode.value):
        return _mode_step(chain, ns, nsdev, device, mounts)
    if ns.filesystem is None or device is None:
        return chain
    if mounts:
        return _mounted_step(chain, ns, device, mounts[-1], owned)
    chain = _format_step(chain, ns, device, facts, owned)
    if chain.issues or ns.mount is None:
        return chain
    return _mount_step(chain, ns, device, facts, owned)


def _mode_matches(nsdev: NdNamespace, want: str) -> bool:
    """Whether the namespace already is in mode ``want``.

    An unclaimed label-less (memmap) namespace reads "memory" on kernels with ZONE_DEVICE, and
    ``ndctl create-namespace --mode=raw`` leaves it exactly so (seen on 6.1): that is as raw as
    it gets. Converting it again would erase the device on every pass, forever.
    """
    if nsdev.pmemd_mode == want:
        return True
    return want == "raw" and nsdev.mode == "memory" and not nsdev.holder


def _mode_step(chain: Chain, ns: Namespace, nsdev: NdNamespace, device: str | None,
               mounts: tuple[MountEntry, ...]) -> Chain:
    name, want = chain.view.name, ns.mode.value
    if mounts:
        return chain.stop("mode", f"{device} is mounted at {mounts[0].mount_point} in mode {nsdev.pmemd_mode}; "
                                  f"unmount it before pmemd changes the mode to {want}")
    # The device name can change; the next pass continues the chain.
    return chain.then(SetMode(summary=f"{name}: convert {nsdev.name} from {nsdev.pmemd_mode} to {want} "
                                      "(erases the device)", ns=name, nd_namespace=nsdev.name, mode=want))


def _mounted_step(chain: Chain, ns: Namespace, device: str, m: MountEntry, owned: Owned) -> Chain:
    assert ns.filesystem is not None
    name = chain.view.name
    chain = replace(chain, view=replace(chain.view, running=Running.MOUNTED, mount=m.mount_point, dax=m.dax))
    target = ns.mount.path if ns.mount else None
    own = owned.namespaces.get(name)
    opts = ",".join(m.super_options)
    if target and m.mount_point != target:
        return chain.stop("mount.path", f"{device} is mounted at {m.mount_point}, not {target}; pmemd does not "
                                        "move mounts it did not make: unmount it")
    if not m.dax and own is not None and own.mount_path == m.mount_point:
        return chain.then(Unmount(summary=f"{name}: unmount {m.mount_point}: pmemd mounted it but it has no DAX "
                                          f"({opts}); mount it again with DAX", ns=name, dev=device,
                                  path=m.mount_point))
    if not m.dax:
        return chain.stop("", f"{device} is mounted at {m.mount_point} without DAX (options {opts}); "
                              "unmount it and run pmemd apply")
    if m.fstype != ns.filesystem.type.value:
        return chain.stop("filesystem.type", f"{device} holds {m.fstype}, not {ns.filesystem.type.value}")
    return chain


def _own_fs(owned: Owned, name: str, sig: Signature) -> OwnedFs | None:
    """The filesystem pmemd recorded making for this namespace, if the device carries its UUID."""
    own = owned.namespaces.get(name)
    if own and own.filesystem and sig.get("UUID") == own.filesystem.uuid:
        return own.filesystem
    return None


def _format_step(chain: Chain, ns: Namespace, device: str, facts: HostFacts, owned: Owned) -> Chain:
    assert ns.filesystem is not None
    name, fstype = chain.view.name, ns.filesystem.type.value
    sig = facts.signature(device)
    if sig is None or not sig.probed:
        return chain.stop("", f"cannot tell what {device} holds: {sig.error if sig else 'not probed'}; "
                              "pmemd formats only devices it can prove blank")
    mine = _own_fs(owned, name, sig)

    def mkfs(summary: str, reason: MkfsReason) -> Chain:
        return chain.then(Mkfs(summary=f"{name}: {summary}", ns=name, dev=device, fstype=fstype,
                               fslabel=ns.filesystem.label if ns.filesystem else None,
                               argv=mkfs_argv(ns, facts.kernel_release), reason=reason))

    if mine and not mine.complete:
        return mkfs(f"mkfs.{fstype} on {device} again: pmemd's own mkfs there did not finish", MkfsReason.REDO)
    if mine and mine.type == sig.get("TYPE") == fstype:
        return replace(chain, view=replace(chain.view, running=Running.FORMATTED))
    if sig.blank:
        return mkfs(f"mkfs.{fstype} on blank {device} (emulated pmem is RAM: blank after every reboot)",
                    MkfsReason.BLANK)
    if ns.on_foreign_data is OnForeignData.WIPE:
        return mkfs(f"WIPE {device} ({sig.describe()}) and mkfs.{fstype} (on_foreign_data: wipe)", MkfsReason.WIPE)
    if mine and mine.type == sig.get("TYPE"):
        return chain.stop("filesystem.type", f"{device} holds the {mine.type} filesystem pmemd made, but the "
                          f"config now asks for {fstype}; pmemd does not reformat a filesystem that may hold "
                          f"data. Set namespaces.{name}.on_foreign_data: wipe to reformat it, or reboot "
                          "(emulated pmem comes back blank)")
    return chain.stop("on_foreign_data", f"{device} holds data pmemd did not write ({sig.describe()}); pmemd "
                      f"will not format it. Copy what you need, then set namespaces.{name}.on_foreign_data: "
                      "wipe (or wipe it yourself)")


def _mount_point_problem(target: str, name: str, facts: HostFacts, owned: Owned) -> str | None:
    pf = facts.path(target)
    if pf is not None and pf.symlinks:
        return (f"{', '.join(pf.symlinks)} is a symlink; pmemd mounts only on real directories so a link "
                "cannot redirect the mount")
    other = facts.mount_at(target)
    if other is not None:
        return f"{target} already has {other.source} ({other.fstype}) mounted; unmount it or choose another path"
    for oname, o in owned.namespaces.items():
        if oname != name and o.mount_path and target.startswith(o.mount_path + "/"):
            return f"{target} is inside pmemd's mount {o.mount_path}; choose another path"
    if pf is not None and pf.exists and not pf.is_dir:
        return f"{target} exists and is not a directory"
    return None


def _mount_step(chain: Chain, ns: Namespace, device: str, facts: HostFacts, owned: Owned) -> Chain:
    assert ns.filesystem is not None and ns.mount is not None
    name, target = chain.view.name, ns.mount.path
    problem = _mount_point_problem(target, name, facts, owned)
    if problem:
        return chain.stop("mount.path", problem)
    pf = facts.path(target)
    if pf is None or not pf.exists:
        chain = chain.then(Mkdir(summary=f"{name}: create mount point {target}", ns=name, path=target))
    opts = (dax_option(facts.kernel_release), *ns.mount.options)
    return chain.then(
        Mount(summary=f"{name}: mount {device} on {target} ({','.join(opts)})", ns=name, dev=device, path=target,
              fstype=ns.filesystem.type.value, options=opts),
        VerifyDax(summary=f"{name}: verify DAX on {target} (mountinfo and STATX_ATTR_DAX)", ns=name, dev=device,
                  path=target))

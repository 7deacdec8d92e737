"""The planner: ``(config, facts, owned) -> Plan``. Pure.

A plan is an ordered tuple of actions (boot arguments → reboot gate → namespace mode → mkfs →
mkdir → mount → verify DAX → clean-up), each labelled ``live``, ``needs-reboot`` or
``destructive``, plus issues and a per-namespace view of desired / configured / running. It is
empty when the host matches the config. ``plan`` is a short pipeline of named steps, each
returning what it found: the boot steps in ``plan_boot``, one namespace's chain in ``plan_fs``,
the check of a booted region in ``diagnose``.
"""

from __future__ import annotations

from dataclasses import field

from pmemd.actions import Action, ClearReboot, Forget, SetKernelArgs, Unmount
from pmemd.config import Loaded
from pmemd.diagnose import NamespaceView
from pmemd.facts import HostFacts, Layout
from pmemd.frozen import frozen
from pmemd.model import Config
from pmemd.plan_boot import boot_args, reboot_gate, trial_gate, trial_progress
from pmemd.plan_fs import after_reboot, namespace_chain
from pmemd.state import Owned
from pmemd.validate import Issue, validate


@frozen
class Plan:
    actions: tuple[Action, ...]
    issues: tuple[Issue, ...]
    namespaces: tuple[NamespaceView, ...]
    desired_args: tuple[str, ...] = ()
    next_boot_args: tuple[str, ...] | None = None
    reboot_needed: bool = False
    notes: tuple[str, ...] = field(default=())
    after_reboot: tuple[str, ...] = ()  # what follows once the kernel has made the device
    trial: str = ""  # whether the next boot is a trial, and why (not)

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.errors


@frozen
class Assessment:
    """One reconcile view of a host: desired (loaded config), observed (facts, owned), the diff."""

    loaded: Loaded
    facts: HostFacts
    owned: Owned
    plan: Plan


def plan(config: Config, facts: HostFacts, owned: Owned, *, retry_trial: bool = False) -> Plan:
    placements, found = validate(config, facts, owned)
    if any(i.severity == "error" for i in found):
        return Plan((), tuple(found), (), notes=facts.boot.notes)
    views: list[NamespaceView] = []
    chains: list[Action] = []
    issues: list[Issue] = [*found, *_limit_warnings(facts), *_nested_mounts(config)]
    after: list[str] = []
    for name in sorted(config.namespaces, key=lambda n: placements[n].start):
        ns, p = config.namespaces[name], placements[name]
        chain = namespace_chain(name, ns, p, facts=facts, owned=owned)
        chains.extend(chain.actions)
        issues.extend(chain.issues)
        views.append(chain.view)
        if chain.view.running.before_reboot:
            after.extend(after_reboot(name, ns, p, facts))
    # A trial armed or running is committed or failed first; the boot steps then see the host
    # as it is after that step.
    tv = trial_progress(facts, owned, tuple(views))
    wanted = boot_args(config, tv.facts, tv.owned, placements)
    boot, trial_note = trial_gate(config, tv.facts, tv.owned, wanted, retry=retry_trial)
    reboot_needed, gate = reboot_gate(config, tv.facts, tv.owned, boot)
    actions: list[Action] = [*tv.actions, *boot.actions, *gate, *chains, *_removed_namespaces(config, facts, owned)]
    issues[len(found):len(found)] = boot.issues
    return Plan(_without_failed(actions, issues), tuple(issues), tuple(views), wanted.desired,
                tv.facts.boot.default_args, reboot_needed, (*facts.boot.notes, *boot.notes), tuple(after), trial_note)


def _limit_warnings(facts: HostFacts) -> list[Issue]:
    return [Issue("warning", None, "", f"the running command line has {limit}, which limits usable RAM (a "
                  "memmap= without a valid !/@/#/$ acts as mem=)") for limit in facts.cmdline.limits]


def _nested_mounts(config: Config) -> list[Issue]:
    paths = {n: ns.mount.path for n, ns in config.namespaces.items() if ns.mount}
    return [Issue("error", name, f"namespaces.{name}.mount.path",
                  f"{path} is inside namespace {other}'s mount {opath}; choose a path outside it")
            for name, path in paths.items() for other, opath in paths.items()
            if other != name and path.startswith(opath + "/")]


def _removed_namespaces(config: Config, facts: HostFacts, owned: Owned) -> list[Action]:
    """Namespaces pmemd owns that left the config: unmount pmemd's mount, then forget them."""
    out: list[Action] = []
    for name, o in sorted(owned.namespaces.items()):
        if name in config.namespaces:
            continue
        mounted = facts.mount_at(o.mount_path) if o.mount_path else None
        if mounted is not None and o.mount_path:
            out.append(Unmount(summary=f"{name}: unmount {o.mount_path} (namespace removed from the config)",
                               ns=name, path=o.mount_path, dev=mounted.source))
        else:
            out.append(Forget(summary=f"{name}: forget the removed namespace", ns=name))
    return out


def _without_failed(actions: list[Action], issues: list[Issue]) -> tuple[Action, ...]:
    """An error stops that namespace's chain; an error not tied to one namespace stops everything."""
    failed = {i.namespace for i in issues if i.severity == "error"}
    if None in failed:
        return ()
    return tuple(a for a in actions if a.namespace not in failed)


def reset_plan(facts: HostFacts, owned: Owned) -> tuple[Action, ...]:
    """Undo everything pmemd owns, whatever the config says (``pmemd reset``, package removal):
    its tokens out of the boot config, its mounts unmounted, its namespaces forgotten, its
    reboot flag cleared. The reservations in effect stay until the next boot."""
    actions: list[Action] = []
    if owned.kernel_args:
        layout = Layout(owned.backend) if owned.backend in tuple(Layout) else facts.boot.layout
        actions.append(SetKernelArgs(summary=f"boot config ({layout}): remove {' '.join(owned.kernel_args)}",
                                     layout=layout, detected_by=facts.boot.detected_by, add=(),
                                     remove=owned.kernel_args))
    for act in _removed_namespaces(Config.model_validate({"version": 1, "namespaces": {}}), facts, owned):
        actions.append(act)
        if isinstance(act, Unmount):  # forgotten once unmounted; a busy mount stays pmemd's
            actions.append(Forget(summary=f"{act.ns}: forget the namespace", ns=act.ns))
    if owned.pending_reboot is not None or owned.kernel_args:
        pending = owned.pending_reboot
        actions.append(ClearReboot(summary="clear pmemd's pending-reboot flag",
                                   cancel_scheduled=bool(pending and pending.scheduled_for
                                                         and pending.boot_id == facts.boot_id)))
    return tuple(actions)

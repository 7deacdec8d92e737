"""Reconciling a host: load config → observe → plan → execute, pass after pass.

Shared by the CLI and the daemon. ``assess`` is the read-only half (what ``plan`` and ``status``
show); ``apply`` runs passes until the host matches, a pass fails, or one makes no progress.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from pmemd import observe as obs
from pmemd import state
from pmemd.actions import Reboot
from pmemd.config import Discovery, Loaded, build
from pmemd.diagnose import new_verdicts
from pmemd.frozen import frozen
from pmemd.fsroot import Root
from pmemd.plan import Assessment, Plan, plan, reset_plan
from pmemd.plan_boot import rollback_plan
from pmemd.runner import Runner
from pmemd.timing import Phases
from pmemd.yamldoc import ConfigErrors, ConfigIssue, Loc

if TYPE_CHECKING:  # the executor is imported when a pass runs: plan and status never load it
    from pmemd.execute import Outcome
    from pmemd.journal import Journal
from pmemd.sources import MAIN_CONFIG, read_sources, with_candidate


@frozen
class Target:
    """Where pmemd looks: the host root and the main config file (maybe outside the root)."""

    root: Root
    config_root: Root
    config_path: str

    @classmethod
    def make(cls, root: str = "/", config: str | None = None) -> Target:
        r = Root(Path(root).absolute())
        if config is None:
            return cls(r, r, MAIN_CONFIG)
        return cls(r, Root(Path("/")), str(Path(config).absolute()))


def read_config(target: Target) -> Discovery:
    """Every effective config file's text (raises ConfigErrors)."""
    return read_sources(target.root, target.config_path, main_root=target.config_root)


def load_config(target: Target, *, candidate: tuple[str, str] | None = None) -> Loaded:
    """The effective config; ``candidate`` (path, name): a drop-in checked as if it were
    installed as /etc/pmem.d/NAME."""
    discovery = read_config(target)
    if candidate is not None:
        discovery = with_candidate(discovery, target.config_path, *candidate)
    if not discovery.main_present:
        raise ConfigErrors([ConfigIssue(
            Loc(target.config_path, 1, 1), "",
            "the main config file is missing, so pmemd changes nothing. Create it (see "
            "examples/pmem.yaml, or `version: 1` and `namespaces: {}` to remove every namespace)")])
    return build(discovery)


def load_owned(root: Root) -> state.Owned:
    return state.loads(root.read_text(state.STATE_FILE))


def assess(target: Target, runner: Runner | None, loaded: Loaded | None = None, *,
           phases: Phases | None = None, retry_trial: bool = False) -> Assessment:
    phases = phases or Phases()
    with phases.phase("config"):
        loaded = loaded or load_config(target)
    cfg = loaded.config
    with phases.phase("observe"):
        owned = load_owned(target.root)
        mount_paths = tuple(ns.mount.path for ns in cfg.namespaces.values() if ns.mount) + tuple(
            o.mount_path for o in owned.namespaces.values() if o.mount_path)
        facts = obs.observe(target.root, runner, bootloader=cfg.settings.bootloader.value,
                            mount_paths=mount_paths, phases=phases)
    with phases.phase("plan"):
        return Assessment(loaded, facts, owned, plan(cfg, facts, owned, retry_trial=retry_trial))


MAX_PASSES = 4  # a mode change, then mkfs, then mount: each pass sees what the one before made
LOCK = "/run/pmemd.lock"  # held while pmemd looks at and changes the host (daemon and CLI alike)
LOCK_WAIT = 900.0  # a pass with mkfs of a large region and update-grub under load stays well below


@frozen
class PassResult:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    side_effects: tuple[str, ...]
    assessment: Assessment

    @property
    def failed(self) -> bool:
        return bool(self.plan.errors) or any(o.result == "failed" for o in self.outcomes)


def apply_pass(target: Target, runner: Runner, journal: Journal, *, dry_run: bool,
               assessment: Assessment | None = None, phases: Phases | None = None) -> PassResult:
    phases = phases or Phases()
    a = assessment or assess(target, runner, phases=phases)
    if not a.plan.actions and not a.plan.issues and not new_verdicts(a.plan.namespaces, a.owned, a.facts.boot_id):
        return PassResult(a.plan, (), (), a)  # in sync, nothing to record: the executor is not loaded

    from pmemd.effects import DryRunEffects, HostEffects
    from pmemd.execute import record_verification, run_plan
    from pmemd.execute_boot import Book
    from pmemd.journal import ERR, WARNING

    fx = (DryRunEffects if dry_run else HostEffects)(target.root, runner, journal)
    book = Book(a.owned, fx)
    for issue in a.plan.issues:
        fx.event("pass", str(issue), priority=ERR if issue.severity == "error" else WARNING,
                 namespace=issue.namespace)
    with phases.phase("actions"):
        record_verification(a.plan.namespaces, a.facts.boot_id, fx=fx, book=book)
        outcomes = run_plan(a.plan.actions, fx=fx, book=book) if not a.plan.errors or a.plan.actions else ()
    return PassResult(a.plan, outcomes, tuple(fx.log), a)


def apply(target: Target, runner: Runner, journal: Journal, *, dry_run: bool = False,
          loaded: Loaded | Assessment | None = None, phases: Phases | None = None) -> list[PassResult]:
    """Apply until the plan is empty, fails, or stops making progress (a mode change or a mkfs
    changes what the next observation sees, so one call can take more than one pass). Holds
    the host lock (``LOCK``) unless it is a dry run.
    ``loaded``: the config (default: read it), or an assessment of it just made, which the first
    pass acts on (``pmemd apply --retry-trial`` passes one made with ``retry_trial``)."""
    with contextlib.nullcontext() if dry_run else target.root.lock(LOCK, wait=LOCK_WAIT):
        return _apply(target, runner, journal, dry_run=dry_run, loaded=loaded, phases=phases)


def _apply(target: Target, runner: Runner, journal: Journal, *, dry_run: bool,
           loaded: Loaded | Assessment | None, phases: Phases | None) -> list[PassResult]:
    results: list[PassResult] = []
    seen: set[tuple[tuple[str, str | None], ...]] = set()
    first = loaded if isinstance(loaded, Assessment) else None
    if isinstance(loaded, Assessment):
        loaded = loaded.loaded
    for _ in range(MAX_PASSES):
        if first is None:
            first = assess(target, runner, loaded, phases=phases)
        r = apply_pass(target, runner, journal, dry_run=dry_run, phases=phases, assessment=first)
        first = None
        results.append(r)
        key = tuple((a.kind.value, a.namespace) for a in r.plan.actions)
        if dry_run or r.failed or not r.plan.actions or key in seen:
            break
        if any(isinstance(a, Reboot) for a in r.plan.actions):
            break
        seen.add(key)
    return results


def rollback(target: Target, runner: Runner, journal: Journal) -> tuple[Outcome, ...]:
    """Put the boot config back to pmemd's tokens before the last trial commit, or disarm an
    armed trial (``plan_boot.rollback_plan``). Raises ValueError when there is nothing to roll back."""
    from pmemd.effects import HostEffects
    from pmemd.execute import run_plan
    from pmemd.execute_boot import Book

    with target.root.lock(LOCK, wait=LOCK_WAIT):
        owned = load_owned(target.root)
        facts = obs.observe(target.root, runner, bootloader=owned.backend, mount_paths=())
        actions, why = rollback_plan(facts, owned)
        if why:
            raise ValueError(why)
        fx = HostEffects(target.root, runner, journal)
        return run_plan(actions, fx=fx, book=Book(owned, fx))


def reset(target: Target, runner: Runner, journal: Journal) -> tuple[Outcome, ...]:
    """Undo everything pmemd owns (see ``plan.reset_plan``), without reading the config: it may
    be gone or broken when a package is removed."""
    from pmemd.effects import HostEffects
    from pmemd.execute import run_plan
    from pmemd.execute_boot import Book

    with target.root.lock(LOCK, wait=LOCK_WAIT):
        owned = load_owned(target.root)
        mount_paths = tuple(o.mount_path for o in owned.namespaces.values() if o.mount_path)
        facts = obs.observe(target.root, runner, bootloader=owned.backend, mount_paths=mount_paths)
        fx = HostEffects(target.root, runner, journal)
        outcomes = run_plan(reset_plan(facts, owned), fx=fx, book=Book(owned, fx))
    if all(o.result == "ok" for o in outcomes):
        for path, _ in fx.written:  # the backups of what was undone: nothing of pmemd's stays
            fx.discard(path + "~pmemd")
    return outcomes

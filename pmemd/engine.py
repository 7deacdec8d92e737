"""One reconcile view of a host: load config → observe → plan. Shared by CLI and daemon."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pmemd import observe as obs
from pmemd import state
from pmemd.config import ConfigErrors, ConfigIssue, Loaded, Loc, build
from pmemd.facts import HostFacts
from pmemd.fsroot import Root
from pmemd.plan import Plan, plan
from pmemd.runner import Runner
from pmemd.sources import MAIN_CONFIG, read_sources


@dataclass(frozen=True)
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


def load_config(target: Target) -> Loaded:
    discovery = read_sources(target.root, target.config_path, main_root=target.config_root)
    if not discovery.main_present:
        raise ConfigErrors([ConfigIssue(
            Loc(target.config_path, 1, 1), "",
            "the main config file is missing, so pmemd changes nothing. Create it (see "
            "examples/pmem.yaml, or `version: 1` and `namespaces: {}` to remove every namespace)")])
    return build(discovery)


def load_owned(root: Root) -> state.Owned:
    return state.loads(root.read_text(state.STATE_FILE))


@dataclass(frozen=True)
class Assessment:
    loaded: Loaded
    facts: HostFacts
    owned: state.Owned
    plan: Plan


def assess(target: Target, runner: Runner | None, loaded: Loaded | None = None) -> Assessment:
    loaded = loaded or load_config(target)
    cfg = loaded.config
    owned = load_owned(target.root)
    mount_paths = tuple(ns.mount.path for ns in cfg.namespaces.values() if ns.mount) + tuple(
        o.mount_path for o in owned.namespaces.values() if o.mount_path)
    facts = obs.observe(target.root, runner, bootloader=cfg.settings.bootloader.value,
                        mount_paths=mount_paths)
    return Assessment(loaded, facts, owned, plan(cfg, facts, owned))

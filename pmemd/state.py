"""What pmemd owns on a host, persisted in ``/var/lib/pmemd/state.json``.

pmemd removes only what it recorded here: the kernel-argument tokens it added, the filesystems
it created (by UUID), the mounts it made. The record lives in ``/var/lib`` (not ``/etc``) so an
image-based or transient ``/etc`` cannot make tokens stack up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, field, replace
from typing import Any

from pmemd.frozen import frozen
from pmemd.trial import Trial, TrialState

STATE_FILE = "/var/lib/pmemd/state.json"
ACTION_LOG = "/var/lib/pmemd/actions.jsonl"
# Past this size the action log moves to actions.jsonl.1 (the journal keeps the full history).
ACTION_LOG_MAX = 1 << 20
MAX_STATE_CHARS = 4 << 20  # the state of 64 namespaces is about 40 KiB


@frozen
class OwnedFs:
    uuid: str
    type: str
    label: str | None = None
    # False from just before mkfs runs until blkid has read the new UUID back: a filesystem
    # with this UUID may be half-written, so pmemd makes it again instead of mounting it.
    complete: bool = True


@frozen
class OwnedNamespace:
    start: int
    size: int
    filesystem: OwnedFs | None = None
    mount_path: str | None = None  # set while pmemd's mount is in place
    verified: str | None = None  # "applied" | "failed: <diagnosis>" after a boot
    verified_boot_id: str | None = None


@frozen
class PendingReboot:
    since: str  # ISO 8601, local time
    boot_id: str | None  # the boot this was recorded in
    reason: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    scheduled_for: str | None = None


@frozen
class Owned:
    kernel_args: tuple[str, ...] = ()  # tokens pmemd added to the boot config
    backend: str | None = None
    namespaces: dict[str, OwnedNamespace] = field(default_factory=dict)
    pending_reboot: PendingReboot | None = None
    trial: Trial = field(default_factory=Trial)  # the last trial boot (pmemd.trial)

    def with_namespace(self, name: str, ns: OwnedNamespace | None) -> Owned:
        spaces = dict(self.namespaces)
        if ns is None:
            spaces.pop(name, None)
        else:
            spaces[name] = ns
        return replace(self, namespaces=spaces)


def dumps(owned: Owned) -> str:
    data = asdict(owned)
    data["version"] = 1
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


class StateError(ValueError):
    pass


def loads(text: str | None) -> Owned:
    """Parse the state file; an absent file is an empty state."""
    if not text or not text.strip():
        return Owned()
    if len(text) > MAX_STATE_CHARS:
        raise StateError(f"{STATE_FILE} is damaged (more than {MAX_STATE_CHARS >> 20} MiB; pmemd "
                         "writes a few KiB); move it aside to start over")
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        pr = data.get("pending_reboot")
        return Owned(
            kernel_args=_strs(data.get("kernel_args", ()), "kernel_args"),
            backend=_opt_str(data.get("backend"), "backend"),
            namespaces={_str(name, "namespace name"): _namespace(entry, name)
                        for name, entry in _map(data.get("namespaces", {}), "namespaces").items()},
            pending_reboot=_pending(_map(pr, "pending_reboot")) if pr else None,
            trial=_trial(_map(data["trial"], "trial")) if data.get("trial") else Trial(),
        )
    except RecursionError:  # nesting deeper than the interpreter's stack: not pmemd's file
        raise StateError(f"{STATE_FILE} is damaged (nested far deeper than pmemd writes it); "
                         "move it aside to start over") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = str(exc)
        why = why if len(why) <= 80 else why[:77] + "..."
        raise StateError(f"{STATE_FILE} is damaged ({type(exc).__name__}: {why}); move it aside "
                         "to start over") from None


def _namespace(entry: Any, name: str) -> OwnedNamespace:
    ns = _map(entry, f"namespaces.{name}")
    fs = ns.get("filesystem")
    filesystem = None
    if fs:
        fs = _map(fs, f"namespaces.{name}.filesystem")
        filesystem = OwnedFs(uuid=_str(fs.get("uuid"), "uuid"), type=_str(fs.get("type"), "type"),
                             label=_opt_str(fs.get("label"), "label"), complete=_bool(fs.get("complete", True)))
    return OwnedNamespace(
        start=_addr(ns["start"], "start"), size=_addr(ns["size"], "size"), filesystem=filesystem,
        mount_path=_opt_str(ns.get("mount_path"), "mount_path"),
        verified=_opt_str(ns.get("verified"), "verified"),
        verified_boot_id=_opt_str(ns.get("verified_boot_id"), "verified_boot_id"))


def _pending(pr: dict[str, Any]) -> PendingReboot:
    return PendingReboot(
        since=_str(pr["since"], "since"), boot_id=_opt_str(pr.get("boot_id"), "boot_id"),
        reason=_str(pr["reason"], "reason"),
        added=_strs(pr.get("added", ()), "added"), removed=_strs(pr.get("removed", ()), "removed"),
        scheduled_for=_opt_str(pr.get("scheduled_for"), "scheduled_for"))


def _trial(tr: dict[str, Any]) -> Trial:
    return Trial(
        state=TrialState(_str(tr.get("state", "none"), "trial.state")),
        tokens=_strs(tr.get("tokens", ()), "trial.tokens"), committed=_strs(tr.get("committed", ()), "trial.committed"),
        previous=None if tr.get("previous") is None else _strs(tr["previous"], "trial.previous"),
        since=_opt_str(tr.get("since"), "trial.since"), boot_id=_opt_str(tr.get("boot_id"), "trial.boot_id"),
        trial_boot_id=_opt_str(tr.get("trial_boot_id"), "trial.trial_boot_id"),
        reason=_str(tr.get("reason", ""), "trial.reason"))


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} is not a list of strings")
    return tuple(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("complete is not true or false")
    return value


def _addr(value: Any, what: str) -> int:
    """A physical address or size as pmemd writes it: an integer in 0 .. 2^64 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{what} is not a 64-bit byte count")
    return value

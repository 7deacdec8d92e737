"""What pmemd owns on a host, persisted in ``/var/lib/pmemd/state.json``.

pmemd removes only what it recorded here: the kernel-argument tokens it added, the filesystems
it created (by UUID), the mounts it made. The record lives in ``/var/lib`` (not ``/etc``) so an
image-based or transient ``/etc`` cannot make tokens stack up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

STATE_FILE = "/var/lib/pmemd/state.json"
ACTION_LOG = "/var/lib/pmemd/actions.jsonl"


@dataclass(frozen=True)
class OwnedFs:
    uuid: str
    type: str
    label: str | None = None
    # False from just before mkfs runs until blkid has read the new UUID back: a filesystem
    # with this UUID may be half-written, so pmemd makes it again instead of mounting it.
    complete: bool = True


@dataclass(frozen=True)
class OwnedNamespace:
    start: int
    size: int
    filesystem: OwnedFs | None = None
    mount_path: str | None = None  # set while pmemd's mount is in place
    verified: str | None = None  # "applied" | "failed: <diagnosis>" after a boot
    verified_boot_id: str | None = None


@dataclass(frozen=True)
class PendingReboot:
    since: str  # ISO 8601, local time
    boot_id: str | None  # the boot this was recorded in
    reason: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    scheduled_for: str | None = None


@dataclass(frozen=True)
class Owned:
    kernel_args: tuple[str, ...] = ()  # tokens pmemd added to the boot config
    backend: str | None = None
    namespaces: dict[str, OwnedNamespace] = field(default_factory=dict)
    pending_reboot: PendingReboot | None = None

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
    try:
        data: dict[str, Any] = json.loads(text)
        spaces = {}
        for name, ns in data.get("namespaces", {}).items():
            fs = ns.get("filesystem")
            spaces[name] = OwnedNamespace(
                start=int(ns["start"]), size=int(ns["size"]),
                filesystem=OwnedFs(**fs) if fs else None,
                mount_path=ns.get("mount_path"),
                verified=ns.get("verified"),
                verified_boot_id=ns.get("verified_boot_id"),
            )
        pr = data.get("pending_reboot")
        pending = None
        if pr:
            pending = PendingReboot(
                since=pr["since"], boot_id=pr.get("boot_id"), reason=pr["reason"],
                added=tuple(pr.get("added", ())), removed=tuple(pr.get("removed", ())),
                scheduled_for=pr.get("scheduled_for"),
            )
        return Owned(
            kernel_args=tuple(data.get("kernel_args", ())),
            backend=data.get("backend"),
            namespaces=spaces,
            pending_reboot=pending,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # AttributeError: not a JSON object
        raise StateError(f"{STATE_FILE} is damaged ({exc}); move it aside to start over") from None

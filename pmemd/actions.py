"""What pmemd can do to a host: one frozen value type per kind of action. Pure.

Each type carries exactly what its handler in ``execute`` needs, so a plan is data that prints
as JSON (``fields``) and the executor dispatches on the type.
"""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pmemd.facts import Layout
from pmemd.frozen import frozen
from pmemd.model import RebootPolicy
from pmemd.trial import Trial


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
    ARM_TRIAL = "arm-trial"
    COMMIT_TRIAL = "commit-trial"
    FAIL_TRIAL = "fail-trial"
    END_TRIAL = "end-trial"


class MkfsReason(StrEnum):
    BLANK = "blank"  # both detectors found nothing (emulated pmem is blank after a reboot)
    REDO = "redo"  # pmemd's own mkfs there did not finish
    WIPE = "wipe"  # foreign data, and the config says on_foreign_data: wipe


@frozen(kw_only=True)
class Range:
    """A namespace's reserved range, recorded as pmemd's before its token is written."""

    name: str
    start: int
    size: int


@frozen(kw_only=True)
class _Base:
    kind: ClassVar[Kind]
    label: ClassVar[Label]
    summary: str

    @property
    def namespace(self) -> str | None:
        return None

    @property
    def device(self) -> str | None:
        return None


@frozen(kw_only=True)
class SetKernelArgs(_Base):
    kind = Kind.SET_KERNEL_ARGS
    label = Label.NEEDS_REBOOT
    layout: Layout
    detected_by: str
    add: tuple[str, ...]  # every token pmemd wants in the boot config (in order)
    remove: tuple[str, ...]  # pmemd's tokens that must leave it
    ranges: tuple[Range, ...] = ()


@frozen(kw_only=True)
class Reboot(_Base):
    kind = Kind.REBOOT
    label = Label.NEEDS_REBOOT
    policy: RebootPolicy
    window: str  # systemd calendar expression, for RebootPolicy.SCHEDULE
    reason: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    boot_id: str | None


@frozen(kw_only=True)
class ClearReboot(_Base):
    kind = Kind.CLEAR_REBOOT
    label = Label.LIVE
    cancel_scheduled: bool  # a reboot pmemd scheduled in this boot is still to come


@frozen(kw_only=True)
class _OnNamespace(_Base):
    ns: str

    @property
    def namespace(self) -> str | None:
        return self.ns


@frozen(kw_only=True)
class SetMode(_OnNamespace):
    kind = Kind.SET_MODE
    label = Label.DESTRUCTIVE
    nd_namespace: str  # e.g. namespace0.0
    mode: str  # fsdax | devdax | raw

    @property
    def device(self) -> str | None:
        return self.nd_namespace


@frozen(kw_only=True)
class Mkfs(_OnNamespace):
    kind = Kind.MKFS
    label = Label.DESTRUCTIVE
    dev: str
    fstype: str
    fslabel: str | None
    argv: tuple[str, ...]  # mkfs command without the UUID option and the device
    reason: MkfsReason

    @property
    def device(self) -> str | None:
        return self.dev


@frozen(kw_only=True)
class Mkdir(_OnNamespace):
    kind = Kind.MKDIR
    label = Label.LIVE
    path: str


@frozen(kw_only=True)
class Mount(_OnNamespace):
    kind = Kind.MOUNT
    label = Label.LIVE
    dev: str
    path: str
    fstype: str
    options: tuple[str, ...]

    @property
    def device(self) -> str | None:
        return self.dev


@frozen(kw_only=True)
class VerifyDax(_OnNamespace):
    kind = Kind.VERIFY_DAX
    label = Label.LIVE
    dev: str
    path: str

    @property
    def device(self) -> str | None:
        return self.dev


@frozen(kw_only=True)
class Unmount(_OnNamespace):
    kind = Kind.UNMOUNT
    label = Label.LIVE
    dev: str | None
    path: str

    @property
    def device(self) -> str | None:
        return self.dev


@frozen(kw_only=True)
class Forget(_OnNamespace):
    kind = Kind.FORGET
    label = Label.LIVE


@frozen(kw_only=True)
class _TrialStep(_Base):
    """A trial-boot transition (``pmemd.trial``): ``trial`` is the record after it (its ``since``
    is set when it is carried out)."""

    layout: Layout
    detected_by: str
    trial: Trial


@frozen(kw_only=True)
class ArmTrial(_TrialStep):
    """Boot ``trial.tokens`` once; the default keeps ``trial.committed``."""

    kind = Kind.ARM_TRIAL
    label = Label.NEEDS_REBOOT
    ranges: tuple[Range, ...] = ()


@frozen(kw_only=True)
class CommitTrial(_TrialStep):
    """The trial boot verified: its tokens become the default, the one-shot goes."""

    kind = Kind.COMMIT_TRIAL
    label = Label.LIVE
    remove: tuple[str, ...]  # the old committed tokens the new ones replace


@frozen(kw_only=True)
class FailTrial(_TrialStep):
    """The trial failed: the one-shot goes, the default keeps ``trial.committed``."""

    kind = Kind.FAIL_TRIAL
    label = Label.LIVE
    disarm: bool = True


@frozen(kw_only=True)
class EndTrial(_TrialStep):
    """An armed trial no longer wanted (the config changed back, ``pmemd rollback``)."""

    kind = Kind.END_TRIAL
    label = Label.LIVE
    disarm: bool = True


Action = (SetKernelArgs | Reboot | ClearReboot | SetMode | Mkfs | Mkdir | Mount | VerifyDax | Unmount | Forget
          | ArmTrial | CommitTrial | FailTrial | EndTrial)


def to_json(act: Action) -> dict[str, Any]:
    """An action as JSON: kind, label, summary, namespace, device, then its own fields."""
    out: dict[str, Any] = {"kind": act.kind.value, "label": act.label.value, "summary": act.summary,
                           "namespace": act.namespace, "device": act.device}
    for f in fields(act):
        if f.name in ("summary", "ns", "dev", "nd_namespace"):
            continue
        value = getattr(act, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        elif isinstance(value, tuple):
            value = [{"name": v.name, "start": v.start, "size": v.size} if isinstance(v, Range) else v
                     for v in value]
        out[f.name] = value
    return {k: v for k, v in out.items() if v is not None}

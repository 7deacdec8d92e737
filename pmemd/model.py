"""The config file's data model (``/etc/pmem.yaml`` plus drop-ins), as pydantic models.

No I/O here. Field descriptions feed ``pmemd schema`` and editor completion.

The field types (sizes, offsets, durations) and the base model, on pydantic's v1 API whichever
pydantic is installed, are in ``pmemd.fields``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pmemd.fields import (
    Duration,
    Field,
    NsSize,
    Offset,
    Size,
    Strict,
    StrictStr,
    ValidationError,
    checked,
    root_validator,
    validator,
)
from pmemd.units import GIB, token

__all__ = ["ValidationError", "token"]  # for config: the error type, one way to quote a value


class RebootPolicy(StrEnum):
    """What pmemd does when kernel arguments changed."""

    NEVER = "never"
    FLAG = "flag"
    SCHEDULE = "schedule"
    NOW = "now"


class BootloaderChoice(StrEnum):
    """The boot-loader backend."""

    AUTO = "auto"
    GRUB = "grub"
    GRUBBY = "grubby"
    GRUB2_MKCONFIG = "grub2-mkconfig"
    SYSTEMD_BOOT = "systemd-boot"


class KaslrPolicy(StrEnum):
    """Whether pmemd adds nokaslr."""

    AUTO = "auto"
    KEEP = "keep"
    DISABLE = "disable"


class Mode(StrEnum):
    """The namespace mode."""

    FSDAX = "fsdax"
    DEVDAX = "devdax"
    RAW = "raw"


class FsType(StrEnum):
    """The filesystem type."""

    EXT4 = "ext4"
    XFS = "xfs"


class TrialBoot(StrEnum):
    """Whether a change of pmemd's kernel arguments is first booted once as a trial."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class OnForeignData(StrEnum):
    """What pmemd does with a device holding data it did not write."""

    REFUSE = "refuse"
    WIPE = "wipe"


# A calendar expression is checked for shape here and by systemd itself (systemd-analyze
# calendar) before pmemd schedules anything with it.
_CALENDAR = re.compile(r"[A-Za-z0-9 :*.,/~+-]{1,64}")


class Settings(Strict):
    reboot: RebootPolicy = Field(
        default=RebootPolicy.FLAG,
        description="What to do when kernel arguments changed: never (only record it), flag "
        "(default: record it and touch /run/reboot-required), schedule (reboot in "
        "reboot_window), now (reboot right after writing the boot config).",
    )
    reboot_window: StrictStr = Field(
        default="Sun 03:00",
        description="systemd calendar expression (see systemd.time(7)) used by reboot: schedule.",
        x_schema={"type": "string", "pattern": f"^{_CALENDAR.pattern}$"},
    )
    bootloader: BootloaderChoice = Field(
        default=BootloaderChoice.AUTO,
        description="Boot-loader backend; auto detects it from the files on the host.",
    )
    trial_boot: TrialBoot = Field(
        default=TrialBoot.AUTO,
        description="auto (default): on boot loaders that can boot an entry once and fall back by "
        "themselves (Debian GRUB whose grubenv GRUB can write, systemd-boot, grubby with "
        "GRUB_DEFAULT=saved), new kernel arguments "
        "are first booted once as a trial, verified, and only then made the default; always: the "
        "same, and a boot loader without one-shot boots is an error; never: write them as the "
        "default at once.",
    )
    min_free_ram: Size = Field(
        default=4 * GIB,
        description="RAM that must stay with the OS after all reservations, counting the 1/64 "
        "struct-page cost of each region.",
    )
    kaslr: KaslrPolicy = Field(
        default=KaslrPolicy.AUTO,
        description="auto: add nokaslr on hosts with <= 16 GiB RAM (pmem.io advice); keep: never "
        "add it; disable: always add nokaslr.",
    )
    resync_interval: Duration = Field(
        default=300,
        description="Daemon: time between full reconcile passes without events: seconds, or a "
        "systemd time span (90s, 5min, 1h30m, '2min 30s'); rounded up to whole seconds.",
    )

    @validator("reboot_window")
    @classmethod
    def _calendar_shape(cls, v: str) -> str:
        if not _CALENDAR.fullmatch(v):
            raise ValueError(
                f"{token(v)} is not a systemd calendar expression; write e.g. 'Sun 03:00' or "
                "'*-*-* 02:30' (see systemd.time(7))"
            )
        return v


_OPT_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_=.,:+/-]*|-[A-Za-z0-9-][A-Za-z0-9_=.,:+/-]*")
_MKFS_FORBIDDEN = {
    "-F": "pmemd never forces mkfs; blank devices need no force and foreign data is refused "
    "unless on_foreign_data: wipe",
    "-f": "pmemd never forces mkfs; use on_foreign_data: wipe to allow wiping foreign data",
    "--force": "pmemd never forces mkfs",
    "-b": "pmemd always uses 4 KiB blocks, which DAX requires",
    "-L": "set filesystem.label instead",
    "-U": "pmemd chooses and records the filesystem UUID itself; do not set it",
    "-n": "-n would make mkfs a dry run",
    "-N": "for ext4 use -N only with a value, e.g. -N 10000 (given as two list items)",
    "-q": "pmemd already runs mkfs quietly",
}
_MOUNT_ALLOWED = {
    "noatime", "relatime", "strictatime", "lazytime", "nodiratime", "diratime",
    "nodev", "nosuid", "noexec", "exec", "suid", "dev", "sync", "dirsync", "ro", "rw",
    "acl", "noacl", "user_xattr", "nouser_xattr", "discard", "nodiscard",
    "errors=remount-ro", "errors=continue", "errors=panic", "noquota", "usrquota",
    "grpquota", "prjquota", "inode64", "nobarrier", "barrier",
}


class Filesystem(Strict):
    type: FsType = Field(description="ext4 or xfs; created with 4 KiB blocks so DAX works.")
    label: StrictStr | None = Field(
        default=None, description="Filesystem label (ext4: up to 16 bytes, xfs: up to 12 bytes).",
        x_schema={"anyOf": [{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,16}$"}, {"type": "null"}]},
    )
    options: tuple[StrictStr, ...] = Field(
        default=(), description="Extra mkfs arguments, one per list item; checked, never a shell string.",
        x_schema={"type": "array",
                   "items": {"type": "string", "pattern": "^(?:" + _OPT_TOKEN.pattern + ")$"}},
    )

    @validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", v):
            raise ValueError(
                f"label {token(v)} must be 1-16 characters of letters, digits, '_', '.', '-'"
            )
        return v

    @validator("options")
    @classmethod
    def _mkfs_options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for opt in v:
            if not _OPT_TOKEN.fullmatch(opt):
                raise ValueError(
                    f"mkfs option {token(opt)} has characters pmemd does not pass on (spaces, quotes, "
                    "shell syntax); give each argument as its own list item"
                )
            flag = opt.split("=", 1)[0]
            if flag in _MKFS_FORBIDDEN:
                raise ValueError(f"mkfs option {token(opt)} is not allowed: {_MKFS_FORBIDDEN[flag]}")
            if "inline_data" in opt and not opt.startswith("^"):
                raise ValueError(f"mkfs option {token(opt)}: ext4 refuses DAX with inline_data")
            if re.search(r"(^|,)uuid=", opt):
                raise ValueError(f"mkfs option {token(opt)} is not allowed: pmemd chooses and records the "
                                 "filesystem UUID itself (mkfs.xfs -m uuid=)")
            if "reflink=1" in opt:
                raise ValueError(f"mkfs option {token(opt)}: xfs DAX needs reflink=0 on most kernels")
        return v

    @root_validator(skip_on_failure=True)
    @classmethod
    def _xfs_label(cls, values: dict[str, Any]) -> dict[str, Any]:
        label = values["label"]
        if values["type"] is FsType.XFS and label is not None and len(label) > 12:
            raise ValueError(f"xfs labels hold at most 12 characters; {token(label)} is longer")
        return values


class Mount(Strict):
    path: StrictStr = Field(..., description="Absolute mount point; created if missing.",
                            x_schema={"type": "string", "pattern": r"^(/[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]*)+$"})
    options: tuple[StrictStr, ...] = Field(
        default=(), description="Extra mount options from an allow-list; DAX (dax=always) is always added.",
        x_schema={"type": "array", "items": {"enum": sorted(_MOUNT_ALLOWED)}},
    )

    @validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"mount path {token(v)} must be absolute, e.g. /pmem/fast")
        parts = v.split("/")
        if any(p in (".", "..") for p in parts) or "//" in v or (v != "/" and v.endswith("/")):
            raise ValueError(f"mount path {token(v)} must be normalised (no '.', '..', '//' or trailing /)")
        if v == "/":
            raise ValueError("mount path must not be /")
        for bad in ("/proc", "/sys", "/dev", "/boot", "/run/pmemd", "/var/lib/pmemd"):
            if v == bad or v.startswith(bad + "/"):
                raise ValueError(f"mount path {token(v)} is inside {bad}; choose e.g. /pmem/<name>")
        if not re.fullmatch(r"[A-Za-z0-9_./@+-]+", v):
            raise ValueError(f"mount path {token(v)} may only hold letters, digits and _./@+-")
        return v

    @validator("options")
    @classmethod
    def _options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for opt in v:
            if opt.startswith("dax"):
                raise ValueError(f"mount option {token(opt)}: pmemd adds dax=always itself; remove it")
            if opt not in _MOUNT_ALLOWED:
                raise ValueError(
                    f"mount option {token(opt)} is not on pmemd's allow-list; allowed: "
                    + ", ".join(sorted(_MOUNT_ALLOWED))
                )
        return v


NAME_RE = r"[a-z0-9][a-z0-9_-]{0,31}"
XFS_MIN = 300 << 20  # xfsprogs >= 5.19: "Filesystem must be larger than 300MB"


def _name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME_RE, value):
        raise ValueError("namespace names are 1-32 characters of lower-case letters, digits, '-' and '_', "
                         "starting with a letter or digit")
    return value


if TYPE_CHECKING:
    NsName = str
else:
    NsName = checked("NsName", _name, {"type": "string", "pattern": f"^{NAME_RE}$"})


class Namespace(Strict):
    size: NsSize = Field(..., description="Bytes, or a number with one suffix K/M/G/T; multiple of 128M.")
    offset: Offset = Field(
        default="auto",
        description="Physical start address (multiple of 128M, >= 4G), or auto: pmemd picks a "
        "safe range and says why.",
    )
    mode: Mode = Field(default=Mode.FSDAX, description="fsdax (default), devdax or raw.")
    filesystem: Filesystem | None = Field(
        default=None, description="Filesystem to create on the device; omit or 'none' for devdax/raw.",
        # `filesystem: none` is accepted like an absent filesystem; the schema says so too.
        x_schema={"anyOf": [{"$ref": "#/definitions/Filesystem"}, {"type": "null"}, {"const": "none"}]},
    )
    mount: Mount | None = Field(default=None, description="Where to mount the filesystem, with DAX.",
                                x_schema={"anyOf": [{"$ref": "#/definitions/Mount"}, {"type": "null"}]})
    on_foreign_data: OnForeignData = Field(
        default=OnForeignData.REFUSE,
        description="refuse (default): never format a device holding data pmemd did not write; "
        "wipe: format it anyway.",
    )

    @validator("filesystem", pre=True)
    @classmethod
    def _none_fs(cls, v: Any) -> Any:
        return None if v == "none" else v

    @validator("size")
    @classmethod
    def _size_nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("size must not be zero")
        return v

    @root_validator(skip_on_failure=True)
    @classmethod
    def _combination(cls, values: dict[str, Any]) -> dict[str, Any]:
        fs, mode, size = values["filesystem"], values["mode"], values["size"]
        if fs is not None and mode is not Mode.FSDAX:
            raise ValueError(
                f"a filesystem needs mode fsdax; mode {mode.value} gives no block device "
                "for DAX. Remove filesystem (and mount) or set mode: fsdax"
            )
        if values["mount"] is not None and fs is None:
            raise ValueError("mount needs a filesystem; add filesystem: {type: ext4} or remove mount")
        if fs is not None and fs.type is FsType.XFS and size < XFS_MIN:
            raise ValueError(
                f"xfs needs at least 300 MiB (mkfs.xfs refuses smaller filesystems); size is "
                f"{size >> 20} MiB: use size: 384M or more, or filesystem type ext4"
            )
        return values


# Each namespace is one memmap= argument on the kernel command line, which holds 2048 bytes on
# x86 (COMMAND_LINE_SIZE) including the distribution's own arguments; a canonical token is 16-24
# bytes. 64 regions fit with room to spare; the e820 table (128 + 3 * MAX_NUMNODES entries) is
# larger still. More than 4 also costs KASLR (see validate).
MAX_NAMESPACES = 64


class Config(Strict):
    version: Literal[1] = Field(..., description="Config format version; must be 1.",
                                x_schema={"type": "integer", "const": 1})
    settings: Settings = Field(default_factory=Settings)
    namespaces: dict[NsName, Namespace] = Field(
        default_factory=dict,
        description="Emulated pmem regions by name (lower-case letters, digits, '-', '_'); at "
        f"most {MAX_NAMESPACES}.",
        x_schema={"type": "object",
                   "patternProperties": {f"^{NAME_RE}$": {"$ref": "#/definitions/Namespace"}},
                   "additionalProperties": False,  # a name outside the pattern is an error
                   "maxProperties": MAX_NAMESPACES},
    )

    @validator("version", pre=True)
    @classmethod
    def _version_int(cls, v: Any) -> Any:
        # 1.0 or true would pass as 1: the format version is an integer
        if isinstance(v, float | bool):
            raise ValueError(f"version must be the integer 1, not {token(v)}")
        return v

    @validator("namespaces", pre=True)
    @classmethod
    def _namespace_count(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) > MAX_NAMESPACES:
            raise ValueError(
                f"{len(v)} namespaces; pmemd accepts at most {MAX_NAMESPACES}: each is one memmap= "
                "argument on a kernel command line of 2048 bytes (x86). Use fewer, larger regions")
        return v

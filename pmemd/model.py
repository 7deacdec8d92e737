"""The config file's data model (``/etc/pmem.yaml`` plus drop-ins), as pydantic v2 models.

No I/O here. Field descriptions feed ``pmemd schema`` and editor completion.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from pmemd.units import GIB, MAX_BYTES, MAX_DURATION, TIMESPAN_PATTERN, SizeError, parse_size, parse_timespan, token

__all__ = ["token"]  # re-exported for config: one way to quote a value in a message


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except SizeError as exc:
        raise ValueError(str(exc)) from None


def _offset(value: object) -> int | str:
    if value == "auto":
        return "auto"
    return _size(value)


# The JSON Schema of sizes is written out: the Python types (int, or int | "auto") would give a
# schema that rejects the strings the config accepts ("4G", "0x100000000").
_SIZE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_BYTES},
              {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,19}|0[xX][0-9a-fA-F]{1,16})[KMGT]?$"}],
}
Size = Annotated[int, BeforeValidator(_size), WithJsonSchema(_SIZE_SCHEMA)]
_ALIGN = 128 << 20  # validate.ALIGN; repeated here only for the schema
# A namespace size: the integer form can carry the 128 MiB rule, the string form only the shape.
NsSize = Annotated[int, BeforeValidator(_size), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": _ALIGN, "maximum": MAX_BYTES, "multipleOf": _ALIGN},
    _SIZE_SCHEMA["anyOf"][1]]})]
Offset = Annotated[
    int | Literal["auto"],
    BeforeValidator(_offset),
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 4 << 30, "maximum": MAX_BYTES, "multipleOf": _ALIGN},
        _SIZE_SCHEMA["anyOf"][1], {"const": "auto"}]}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class RebootPolicy(StrEnum):
    NEVER = "never"
    FLAG = "flag"
    SCHEDULE = "schedule"
    NOW = "now"


class BootloaderChoice(StrEnum):
    AUTO = "auto"
    GRUB = "grub"
    GRUBBY = "grubby"
    GRUB2_MKCONFIG = "grub2-mkconfig"
    SYSTEMD_BOOT = "systemd-boot"


class KaslrPolicy(StrEnum):
    AUTO = "auto"
    KEEP = "keep"
    DISABLE = "disable"


class Mode(StrEnum):
    FSDAX = "fsdax"
    DEVDAX = "devdax"
    RAW = "raw"


class FsType(StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"


class OnForeignData(StrEnum):
    REFUSE = "refuse"
    WIPE = "wipe"


def _duration(value: object) -> int:
    """Whole seconds; a span with a fraction of a second is rounded up (at least 1s)."""
    hint = "write e.g. 300, 90s, 5min, 1h30m or '2min 30s' (systemd.time(7))"
    if isinstance(value, bool):
        raise ValueError(f"expected a duration; {hint}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_timespan(value)
        except ValueError:
            raise ValueError(f"{token(value)} is not a duration; {hint}") from None
    else:
        raise ValueError(f"expected a duration; {hint}")
    if not seconds > 0:
        raise ValueError(f"a duration must be positive; {hint}")
    if seconds > MAX_DURATION:
        raise ValueError(f"{token(value)} is more than a year; {hint}")
    whole = int(seconds)
    return whole if whole == seconds else whole + 1


Duration = Annotated[int, BeforeValidator(_duration), WithJsonSchema({
    "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
              {"type": "string", "pattern": TIMESPAN_PATTERN}]})]

# A calendar expression is checked for shape here and by systemd itself (systemd-analyze
# calendar) before pmemd schedules anything with it.
_CALENDAR = re.compile(r"[A-Za-z0-9 :*.,/~+-]{1,64}")


class Settings(_Strict):
    reboot: RebootPolicy = Field(
        RebootPolicy.FLAG,
        description="What to do when kernel arguments changed: never (only record it), flag "
        "(default: record it and touch /run/reboot-required), schedule (reboot in "
        "reboot_window), now (reboot right after writing the boot config).",
    )
    reboot_window: str = Field(
        "Sun 03:00",
        description="systemd calendar expression (see systemd.time(7)) used by reboot: schedule.",
        json_schema_extra={"pattern": f"^{_CALENDAR.pattern}$"},
    )
    bootloader: BootloaderChoice = Field(
        BootloaderChoice.AUTO,
        description="Boot-loader backend; auto detects it from the files on the host.",
    )
    min_free_ram: Size = Field(
        4 * GIB,
        description="RAM that must stay with the OS after all reservations, counting the 1/64 "
        "struct-page cost of each region.",
    )
    kaslr: KaslrPolicy = Field(
        KaslrPolicy.AUTO,
        description="auto: add nokaslr on hosts with <= 16 GiB RAM (pmem.io advice); keep: never "
        "add it; disable: always add nokaslr.",
    )
    resync_interval: Duration = Field(
        300,
        description="Daemon: time between full reconcile passes without events: seconds, or a "
        "systemd time span (90s, 5min, 1h30m, '2min 30s'); rounded up to whole seconds.",
    )

    @field_validator("reboot_window")
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


class Filesystem(_Strict):
    type: FsType = Field(description="ext4 or xfs; created with 4 KiB blocks so DAX works.")
    label: str | None = Field(
        None, description="Filesystem label (ext4: up to 16 bytes, xfs: up to 12 bytes).",
        json_schema_extra={"pattern": "^[A-Za-z0-9_.-]{1,16}$"},
    )
    options: tuple[str, ...] = Field(
        (), description="Extra mkfs arguments, one per list item; checked, never a shell string.",
        json_schema_extra={"items": {"type": "string", "pattern": "^(?:" + _OPT_TOKEN.pattern + ")$"}},
    )

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", v):
            raise ValueError(
                f"label {token(v)} must be 1-16 characters of letters, digits, '_', '.', '-'"
            )
        return v

    @field_validator("options")
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

    @model_validator(mode="after")
    def _xfs_label(self) -> Filesystem:
        if self.type is FsType.XFS and self.label is not None and len(self.label) > 12:
            raise ValueError(f"xfs labels hold at most 12 characters; {token(self.label)} is longer")
        return self


class Mount(_Strict):
    path: str = Field(description="Absolute mount point; created if missing.",
                      json_schema_extra={"pattern": r"^(/[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]*)+$"})
    options: tuple[str, ...] = Field(
        (), description="Extra mount options from an allow-list; DAX (dax=always) is always added.",
        json_schema_extra={"items": {"enum": list(sorted(_MOUNT_ALLOWED))}},
    )

    @field_validator("path")
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

    @field_validator("options")
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


def _accept_none_string(schema: dict[str, Any]) -> None:
    """``filesystem: none`` is accepted like an absent filesystem; the schema says so too."""
    schema["anyOf"] = [*schema["anyOf"], {"const": "none"}]


class Namespace(_Strict):
    size: NsSize = Field(description="Bytes, or a number with one suffix K/M/G/T; multiple of 128M.")
    offset: Offset = Field(
        "auto",
        description="Physical start address (multiple of 128M, >= 4G), or auto: pmemd picks a "
        "safe range and says why.",
    )
    mode: Mode = Field(Mode.FSDAX, description="fsdax (default), devdax or raw.")
    filesystem: Filesystem | None = Field(
        None, description="Filesystem to create on the device; omit or 'none' for devdax/raw.",
        json_schema_extra=_accept_none_string,
    )
    mount: Mount | None = Field(None, description="Where to mount the filesystem, with DAX.")
    on_foreign_data: OnForeignData = Field(
        OnForeignData.REFUSE,
        description="refuse (default): never format a device holding data pmemd did not write; "
        "wipe: format it anyway.",
    )

    @field_validator("filesystem", mode="before")
    @classmethod
    def _none_fs(cls, v: Any) -> Any:
        return None if v == "none" else v

    @field_validator("size")
    @classmethod
    def _size_nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("size must not be zero")
        return v

    @model_validator(mode="after")
    def _combination(self) -> Namespace:
        if self.filesystem is not None and self.mode is not Mode.FSDAX:
            raise ValueError(
                f"a filesystem needs mode fsdax; mode {self.mode.value} gives no block device "
                "for DAX. Remove filesystem (and mount) or set mode: fsdax"
            )
        if self.mount is not None and self.filesystem is None:
            raise ValueError("mount needs a filesystem; add filesystem: {type: ext4} or remove mount")
        if self.filesystem is not None and self.filesystem.type is FsType.XFS and self.size < XFS_MIN:
            raise ValueError(
                f"xfs needs at least 300 MiB (mkfs.xfs refuses smaller filesystems); size is "
                f"{self.size >> 20} MiB: use size: 384M or more, or filesystem type ext4"
            )
        return self


# Each namespace is one memmap= argument on the kernel command line, which holds 2048 bytes on
# x86 (COMMAND_LINE_SIZE) including the distribution's own arguments; a canonical token is 16-24
# bytes. 64 regions fit with room to spare; the e820 table (128 + 3 * MAX_NUMNODES entries) is
# larger still. More than 4 also costs KASLR (see validate).
MAX_NAMESPACES = 64


class Config(_Strict):
    version: Literal[1] = Field(description="Config format version; must be 1.")
    settings: Settings = Field(default_factory=Settings)
    namespaces: dict[Annotated[str, Field(pattern=f"^{NAME_RE}$")], Namespace] = Field(
        default_factory=dict,
        description="Emulated pmem regions by name (lower-case letters, digits, '-', '_'); at "
        f"most {MAX_NAMESPACES}.",
        json_schema_extra={"additionalProperties": False,  # a name outside the pattern is an error
                           "maxProperties": MAX_NAMESPACES},
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_int(cls, v: Any) -> Any:
        if isinstance(v, float):  # 1.0 would pass as 1: the format version is an integer
            raise ValueError(f"version must be the integer 1, not {token(v)}")
        return v

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespace_count(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) > MAX_NAMESPACES:
            raise ValueError(
                f"{len(v)} namespaces; pmemd accepts at most {MAX_NAMESPACES}: each is one memmap= "
                "argument on a kernel command line of 2048 bytes (x86). Use fewer, larger regions")
        return v

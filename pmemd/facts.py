"""Small frozen values describing what pmemd observed on a host. No I/O."""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum

from pmemd.frozen import frozen


class Layout(StrEnum):
    """A boot-loader layout: where the next boot's kernel arguments live (see ``bootloader``)."""

    GRUB = "grub"  # Debian/Ubuntu GRUB: /etc/default/grub.d + update-grub
    GRUBBY = "grubby"  # Fedora/RHEL GRUB with BLS entries, edited by grubby
    GRUB2_MKCONFIG = "grub2-mkconfig"  # GRUB whose generator reads only /etc/default/grub
    SYSTEMD_BOOT = "systemd-boot"  # BLS entries + /etc/kernel/cmdline
    UNKNOWN = "unknown"


class MemmapKind(StrEnum):
    PRAM = "pram"  # nn!ss: emulated persistent memory (e820 type 12)
    RAM = "ram"  # nn@ss
    ACPI = "acpi"  # nn#ss
    RESERVED = "reserved"  # nn$ss
    CONVERT = "convert"  # nn%ss-old+new
    LIMIT = "limit"  # anything else after the size: acts like mem=nn
    EXACTMAP = "exactmap"
    IGNORED = "ignored"  # no number at all: the kernel skips it


@frozen
class MemmapEntry:
    kind: MemmapKind
    size: int
    start: int | None
    piece: str  # the comma-separated piece as written
    token: str  # the whole memmap=... argument it came from

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + self.size


@frozen
class Cmdline:
    tokens: tuple[str, ...]
    memmap: tuple[MemmapEntry, ...] = ()
    limits: tuple[str, ...] = ()  # tokens that would cap system RAM (mem=, memmap=nn, ...)
    crashkernel: tuple[int, int | None] | None = None  # (size, fixed start or None)

    def has(self, token: str) -> bool:
        return token in self.tokens

    @property
    def pram(self) -> tuple[MemmapEntry, ...]:
        return tuple(e for e in self.memmap if e.kind is MemmapKind.PRAM)


@frozen
class MemRange:
    start: int
    end: int  # exclusive
    type: str

    @property
    def size(self) -> int:
        return self.end - self.start

    def contains(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


@frozen
class IomemEntry:
    start: int
    end: int  # exclusive
    name: str
    children: tuple[str, ...] = ()


@frozen
class NdNamespace:
    name: str
    mode: str  # sysfs mode: raw | memory | dax | safe | ...
    size: int | None
    blockdev: str | None  # e.g. "pmem0"
    chardev: str | None = None  # e.g. "dax0.0"
    holder: str | None = None  # the claiming pfn/dax/btt device ("pfn0.0"); "" or None: unclaimed

    @property
    def pmemd_mode(self) -> str:
        """The mode in ndctl/pmemd terms (fsdax, devdax, sector, raw)."""
        return {"memory": "fsdax", "dax": "devdax", "safe": "sector"}.get(self.mode, self.mode)


@frozen
class NdRegion:
    name: str
    bus: str
    provider: str
    start: int | None  # None when the resource attribute is unreadable (needs root)
    size: int
    numa_node: int | None
    namespaces: tuple[NdNamespace, ...] = ()

    @property
    def is_emulated(self) -> bool:
        return self.provider == "e820"


@frozen
class MountEntry:
    mount_id: int
    device: str  # major:minor
    root: str
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def dax(self) -> bool:
        opts = set(self.options) | set(self.super_options)
        return ("dax" in opts or "dax=always" in opts) and "dax=never" not in opts


@frozen
class Signature:
    """What the two independent detectors found on a block device."""

    device: str
    probed: bool  # False: the device could not be probed (no node, tool missing)
    blkid: tuple[tuple[str, str], ...] = ()  # KEY=VALUE pairs of `blkid -p -o export`
    wipefs: tuple[str, ...] = ()  # signature types from `wipefs --json`
    error: str | None = None

    @property
    def blank(self) -> bool:
        return self.probed and not self.blkid_type and not self.wipefs and self.error is None

    def get(self, key: str) -> str | None:
        return dict(self.blkid).get(key)

    @property
    def blkid_type(self) -> str | None:
        return self.get("TYPE") or self.get("PTTYPE")

    def describe(self) -> str:
        if not self.probed:
            return self.error or "not probed"
        found = []
        if self.blkid_type:
            extra = ", ".join(f"{k}={v}" for k, v in self.blkid if k in ("LABEL", "UUID"))
            found.append(f"{self.blkid_type}" + (f" ({extra})" if extra else ""))
        found.extend(t for t in self.wipefs if t != self.blkid_type)
        return ", ".join(found) if found else "no signature"


@frozen
class KernelLog:
    user_map: tuple[MemRange, ...] = ()
    problems: tuple[str, ...] = ()  # lines that diagnose a failed or damaged pmem region
    readable: bool = False


@frozen
class BootEntry:
    """One place that decides a future kernel command line."""

    source: str  # file that holds it (grub.cfg, a BLS entry, /etc/kernel/cmdline)
    title: str
    args: tuple[str, ...]
    default: bool = False


@frozen
class BootConfig:
    layout: Layout
    detected_by: str
    entries: tuple[BootEntry, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. "grub.cfg is older than /etc/default/grub"
    owned_file: str | None = None  # the file pmemd writes its tokens to on this layout
    owned_tokens: tuple[str, ...] = ()  # tokens currently in that file
    problems: tuple[str, ...] = ()  # damaged boot files: pmemd changes nothing until they are fixed
    trial_ok: bool = False  # the layout can boot a trial once and fall back by itself (pmemd.trial)
    trial_why: str = "no one-shot boot is known for this layout"
    trial_args: tuple[str, ...] | None = None  # pmemd's part of an armed trial boot's arguments

    @property
    def default_args(self) -> tuple[str, ...] | None:
        for e in self.entries:
            if e.default:
                return e.args
        return self.entries[0].args if self.entries else None


@frozen
class PathFact:
    path: str
    exists: bool
    is_dir: bool
    symlinks: tuple[str, ...] = ()  # symlinks found on the path or its parents


@frozen
class HostFacts:
    cmdline: Cmdline
    firmware_map: tuple[MemRange, ...]
    iomem_pmem: tuple[IomemEntry, ...]  # top-level "Persistent Memory*" resources
    regions: tuple[NdRegion, ...]
    mounts: tuple[MountEntry, ...]
    mem_total: int | None  # bytes, from /proc/meminfo
    numa: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # node -> [start, end) ranges
    kernel_log: KernelLog
    boot: BootConfig
    kernel_release: str | None
    boot_id: str | None
    signatures: tuple[Signature, ...] = ()
    paths: tuple[PathFact, ...] = field(default=())

    def path(self, path: str) -> PathFact | None:
        return next((p for p in self.paths if p.path == path), None)

    def signature(self, device: str) -> Signature | None:
        for s in self.signatures:
            if s.device == device:
                return s
        return None

    def mounts_of(self, device: str, major_minor: str | None) -> tuple[MountEntry, ...]:
        return tuple(m for m in self.mounts
                     if m.source == device or (major_minor is not None and m.device == major_minor))

    def mount_at(self, path: str) -> MountEntry | None:
        found = None
        for m in self.mounts:
            if m.mount_point == path:
                found = m  # the last one is on top
        return found

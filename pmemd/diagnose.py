"""Did a declared region come up as declared? Pure: ``(facts, placement) -> state, diagnosis``.

A region passes when its token is on the running command line, ``/proc/iomem`` has exactly its
range as ``Persistent Memory (legacy)``, an ``e820`` nd region has its address and size, that
region's namespace has a device, and the kernel log names no problem with it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

from pmemd.facts import HostFacts, NdRegion
from pmemd.frozen import frozen
from pmemd.validate import Placement

if TYPE_CHECKING:
    from pmemd.state import Owned

DEVICE_PENDING = "(not probed yet, or the probe failed)"


class Running(StrEnum):
    """Where a declared namespace stands on the running host."""

    DECLARED = "declared"  # in the config only
    CONFIGURED = "configured"  # its token is in the next-boot arguments
    PRESENT = "present"  # booted with it; the kernel made the device
    FAILED = "failed"  # booted with it, but the region is not as declared
    FORMATTED = "formatted"  # holds the filesystem pmemd made
    MOUNTED = "mounted"

    @property
    def before_reboot(self) -> bool:
        return self in (Running.DECLARED, Running.CONFIGURED)


@frozen(kw_only=True)
class NamespaceView:
    name: str
    start: int | None
    size: int
    token: str | None
    placement: str  # why this range
    configured: bool  # token in the next-boot arguments
    running: Running
    device: str | None = None
    mount: str | None = None
    dax: bool | None = None
    diagnosis: tuple[str, ...] = ()

    @property
    def device_pending(self) -> bool:
        """The region is booted but the kernel has not (yet) made its device: drivers are still
        probing early in boot, or the probe failed. Worth looking again soon."""
        return self.running is Running.FAILED and any(d.endswith(DEVICE_PENDING) for d in self.diagnosis)


def region_for(facts: HostFacts, p: Placement) -> NdRegion | None:
    for r in facts.regions:
        if r.is_emulated and r.start == p.start and r.size == p.size:
            return r
    return None


_DEVICE_NAME = re.compile(r"\b((?:namespace|pfn|dax|btt)\d+\.\d+|pmem\d+(?:\.\d+)?s?)\b")
_MEM_RANGE = re.compile(r"\[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)")
_FS_DEVICE = re.compile(r"^[A-Za-z0-9_-]+ \((\S+?)\):")  # "EXT4-fs (loop0): ...", "XFS (pmem0): ..."


def _names_of(facts: HostFacts, p: Placement, region: NdRegion | None) -> set[str]:
    """Device names of this region, or of the pieces the kernel made of its range."""
    names: set[str] = set()
    for r in facts.regions:
        if r is region or (r.start is not None and r.start < p.end and p.start < r.start + r.size):
            for ns in r.namespaces:
                names.update(x for x in (ns.name, ns.blockdev, ns.chardev, ns.holder) if x)
    return names


def problems_of(facts: HostFacts, p: Placement, region: NdRegion | None) -> list[str]:
    """The kernel-log problems that concern this region.

    A message naming devices (``nd_pmem namespace2.0: …``, ``EXT4-fs (loop0): …``) or a memory
    range (``[mem 0x…-0x…]``) belongs to the region it names, or to the pieces the kernel split
    this range into: a DAX failure on some other disk or a misaligned foreign region must not fail
    this one. A message that names nothing (``.text .data .bss are not marked as
    E820_TYPE_RAM!``) could concern any region, so it stays.
    """
    names = _names_of(facts, p, region)
    out = []
    for msg in facts.kernel_log.problems:
        devices = set(_DEVICE_NAME.findall(msg))
        fs = _FS_DEVICE.match(msg)
        if fs:
            devices.add(fs.group(1))
        ranges = [(int(a, 16), int(b, 16) + 1) for a, b in _MEM_RANGE.findall(msg)]
        unattributed = not devices and not ranges
        if unattributed or devices & names or any(s < p.end and p.start < e for s, e in ranges):
            out.append(msg)
    return out


def _iomem_notes(facts: HostFacts, p: Placement) -> list[str]:
    iomem = [e for e in facts.iomem_pmem if e.start < p.end and p.start < e.end]
    if any(e.start == p.start and e.end == p.end and "legacy" in e.name for e in iomem):
        return []
    if iomem:
        return ["the kernel changed the region: /proc/iomem has "
                + ", ".join(f"{e.name} [{e.start:#x}-{e.end - 1:#x}]" for e in iomem)
                + f" instead of [{p.start:#x}-{p.end - 1:#x}]"]
    return [f"{p.token} is on the command line but /proc/iomem has no Persistent Memory (legacy) range there"]


def _region_notes(facts: HostFacts, p: Placement, region: NdRegion | None) -> list[str]:
    if region is None:
        if any(r.is_emulated and r.start is None and r.size == p.size for r in facts.regions):
            return ["region addresses are unreadable (run as root)"]
        if not any(r.is_emulated for r in facts.regions):
            return [f"no e820 nvdimm region: is the nd_e820 module loaded? (modprobe nd_e820) {DEVICE_PENDING}"]
        return ["no e820 nd region with this exact address and size"]
    if not any(ns.blockdev or ns.chardev for ns in region.namespaces):
        return [f"{region.name} exists but its namespace has no device {DEVICE_PENDING}"]
    return []


def diagnose(facts: HostFacts, p: Placement) -> tuple[Running, tuple[str, ...]]:
    """(running state, diagnosis) for a region booted with its token (see the module doc)."""
    region = region_for(facts, p)
    notes = [*_iomem_notes(facts, p), *_region_notes(facts, p, region), *problems_of(facts, p, region)]
    return (Running.FAILED, tuple(notes)) if notes else (Running.PRESENT, ())


def new_verdicts(views: tuple[NamespaceView, ...], owned: Owned, boot_id: str | None
                 ) -> tuple[tuple[NamespaceView, str], ...]:
    """The regions whose verdict for this boot (``applied`` or ``failed: <diagnosis>``) is not
    recorded yet: recorded and journalled once per boot."""
    out = []
    for v in views:
        prev = owned.namespaces.get(v.name)
        if prev is None or v.running.before_reboot:
            continue
        verdict = "failed: " + "; ".join(v.diagnosis) if v.running is Running.FAILED else "applied"
        if prev.verified != verdict or prev.verified_boot_id != boot_id:
            out.append((v, verdict))
    return tuple(out)

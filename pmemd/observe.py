"""Read-only observation of a host, always relative to a ``Root``.

Thin readers around the pure parsers in ``parse``; the boot-loader files are read by the layout
modules of ``bootloader``. The only processes started
are the two signature detectors (``blkid -p`` and ``wipefs``), and only for pmem block devices
that are not mounted.
"""

from __future__ import annotations

import re
from dataclasses import replace

from pmemd import parse
from pmemd.bootloader import read_boot_config
from pmemd.facts import (
    HostFacts,
    IomemEntry,
    MemRange,
    MountEntry,
    NdNamespace,
    NdRegion,
    PathFact,
    Signature,
)
from pmemd.fsroot import Root
from pmemd.runner import Runner
from pmemd.timing import Phases


def read_firmware_map(root: Root) -> tuple[MemRange, ...]:
    entries = []
    base = "/sys/firmware/memmap"
    for name in root.listdir(base):
        if not name.isdigit():
            continue
        start = root.read_attr(f"{base}/{name}/start")
        end = root.read_attr(f"{base}/{name}/end")
        type_ = root.read_attr(f"{base}/{name}/type")
        if start and end and type_:
            entries.append(parse.parse_firmware_entry(start, end, type_, source=f"{base}/{name}"))
    return tuple(sorted(entries, key=lambda r: r.start))


def read_iomem_pmem(root: Root) -> tuple[IomemEntry, ...]:
    text = root.read_text("/proc/iomem") or ""
    return tuple(e for e in parse.parse_iomem(text) if e.name.startswith("Persistent Memory"))


def read_regions(root: Root) -> tuple[NdRegion, ...]:
    base = "/sys/bus/nd/devices"
    regions = []
    for name in root.listdir(base):
        if not re.fullmatch(r"region\d+", name):
            continue
        real = root.resolve(f"{base}/{name}")
        bus = real.parent.name
        provider = root.read_attr(f"{base}/{bus}/provider") or "unknown"
        namespaces = _read_namespaces(root, root.host_path(real))
        regions.append(NdRegion(
            name=name,
            bus=bus,
            provider=provider,
            start=parse.parse_int_attr(root.read_attr(f"{base}/{name}/resource")),
            size=parse.parse_int_attr(root.read_attr(f"{base}/{name}/size")) or 0,
            numa_node=parse.parse_int_attr(root.read_attr(f"{base}/{name}/numa_node")),
            namespaces=namespaces,
        ))
    return tuple(sorted(regions, key=lambda r: (r.start is None, r.start or 0, r.name)))


def _read_namespaces(root: Root, region_dir: str) -> tuple[NdNamespace, ...]:
    children = root.listdir(region_dir)
    blocks: dict[str, str] = {}  # namespace name -> block device
    chars: dict[str, str] = {}
    for child in children:
        cdir = f"{region_dir}/{child}"
        owner = child
        if not child.startswith("namespace"):
            owner = root.read_attr(f"{cdir}/namespace") or ""
        for blk in root.listdir(f"{cdir}/block"):
            if owner:
                blocks[owner] = blk
        if child.startswith("dax"):
            for dev in root.listdir(cdir):
                if re.fullmatch(r"dax\d+\.\d+", dev) and owner:
                    chars[owner] = dev
    out = []
    for child in children:
        if not re.fullmatch(r"namespace\d+\.\d+", child):
            continue
        cdir = f"{region_dir}/{child}"
        size = parse.parse_int_attr(root.read_attr(f"{cdir}/size"))
        out.append(NdNamespace(
            name=child,
            mode=root.read_attr(f"{cdir}/mode") or "unknown",
            size=size,
            blockdev=blocks.get(child),
            chardev=chars.get(child),
            holder=root.read_attr(f"{cdir}/holder"),
        ))
    return tuple(out)


def read_numa(root: Root) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
    text = root.read_attr("/sys/devices/system/memory/block_size_bytes")  # hex without 0x
    block = int(text, 16) if text and re.fullmatch(r"[0-9a-fA-F]+", text) else 0
    if not block:
        return ()
    nodes = []
    for name in root.listdir("/sys/devices/system/node"):
        m = re.fullmatch(r"node(\d+)", name)
        if not m:
            continue
        idx = sorted(int(x[6:]) for x in root.listdir(f"/sys/devices/system/node/{name}")
                     if re.fullmatch(r"memory\d+", x))
        ranges: list[tuple[int, int]] = []
        for i in idx:
            start, end = i * block, (i + 1) * block
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
        nodes.append((int(m.group(1)), tuple(ranges)))
    return tuple(nodes)


def read_mounts(root: Root, interest: set[str] | None = None) -> tuple[MountEntry, ...]:
    """Mounts from mountinfo; with ``interest``, only pmem devices and those mount points.

    Below a --root whose mountinfo is the live one (tests on loop devices), paths under the
    root prefix are shown as the host paths they stand for.
    """
    text = root.read_text("/proc/self/mountinfo") or ""
    prefix = str(root.prefix)
    translate = not root.is_host and prefix + "/" in text
    if interest is not None:
        wanted = interest | ({prefix + p for p in interest} if translate else set())
        keep = []
        for line in text.splitlines():
            if "/dev/pmem" in line:
                keep.append(line)
                continue
            fields = line.split(" ", 5)
            if len(fields) > 4 and parse.unescape_mount_field(fields[4]) in wanted:
                keep.append(line)
        text = "\n".join(keep)
    entries = parse.parse_mountinfo(text)
    if not translate:
        return entries

    def strip(p: str) -> str:
        return p[len(prefix):] if p.startswith(prefix + "/") else p

    return tuple(replace(m, mount_point=strip(m.mount_point), source=strip(m.source))
                 if m.mount_point.startswith(prefix) or m.source.startswith(prefix) else m for m in entries)


def read_kmsg(root: Root) -> str | None:
    """The kernel log: /dev/kmsg read without blocking, capped (a regular file in captured trees)."""
    return root.read_kernel_log("/dev/kmsg")


def booted_regions_have_devices(root: Root) -> bool:
    """False while a ``memmap=nn!ss`` range of the running command line waits for its device:
    no e820 nd region exists yet, or its region has no block or character device yet (the cases
    the diagnosis calls pending). Cheap, so the daemon can poll it at start while the drivers
    probe: no command, and per region only its address, size and device directories (the
    namespace attributes take the device lock the probe holds)."""
    wanted = {(e.start, e.size) for e in parse.parse_cmdline(root.read_text("/proc/cmdline") or "").pram}
    if not wanted:
        return True
    base = "/sys/bus/nd/devices"
    emulated = False
    for name in root.listdir(base):
        if not re.fullmatch(r"region\d+", name):
            continue
        bus = root.resolve(f"{base}/{name}").parent.name
        if root.read_attr(f"{base}/{bus}/provider") != "e820":
            continue
        emulated = True
        at = (parse.parse_int_attr(root.read_attr(f"{base}/{name}/resource")),
              parse.parse_int_attr(root.read_attr(f"{base}/{name}/size")))
        if at in wanted and not _has_device(root, f"{base}/{name}"):
            return False
    return emulated


def _has_device(root: Root, region_dir: str) -> bool:
    """A block device below one of the region's namespace, pfn or btt devices, or a dax device."""
    for child in root.listdir(region_dir):
        if root.listdir(f"{region_dir}/{child}/block"):
            return True
        if child.startswith("dax") and any(re.fullmatch(r"dax\d+\.\d+", dev)
                                           for dev in root.listdir(f"{region_dir}/{child}")):
            return True
    return False


def probe_signature(root: Root, runner: Runner, device: str) -> Signature:
    """Run both detectors on a block device; anything unusual counts as "not blank"."""
    path = str(root.join(device))
    if not root.exists(device):
        return Signature(device, False, error=f"{device} does not exist (yet)")
    blkid = runner.run(["blkid", "-p", "-o", "export", path], timeout=30)
    if blkid.returncode not in (0, 2):
        return Signature(device, False, error=f"blkid failed: {blkid.describe()}")
    wipefs = runner.run(["wipefs", "--no-act", "--json", path], timeout=30)
    if not wipefs.ok:
        return Signature(device, False, error=f"wipefs failed: {wipefs.describe()}")
    try:
        types = parse.parse_wipefs_json(wipefs.stdout)
    except ValueError as exc:
        return Signature(device, False, error=f"cannot read wipefs output: {exc}")
    pairs = parse.parse_blkid_export(blkid.stdout) if blkid.returncode == 0 else ()
    return Signature(device, True, pairs, types)


def observe(root: Root, runner: Runner | None, *, bootloader: str | None = None,
            mount_paths: tuple[str, ...] = (), phases: Phases | None = None) -> HostFacts:
    """Everything the planner needs, read from the host (or a captured tree).

    ``mount_paths``: the mount points the config and the state file name; of all other mounts
    only those of pmem devices are kept. ``phases`` gets the time of each source, as
    ``observe:<source>``.
    """
    ph = phases or Phases()
    with ph.phase("observe:kernel-log"):
        kmsg = read_kmsg(root)
    with ph.phase("observe:nd-regions"):
        regions = read_regions(root)
    with ph.phase("observe:mounts"):
        mounts = read_mounts(root, set(mount_paths))
    signatures = []
    if runner is not None:
        mounted = {m.source for m in mounts}
        with ph.phase("observe:signatures"):
            for region in regions:
                if not region.is_emulated:
                    continue
                for ns in region.namespaces:
                    dev = f"/dev/{ns.blockdev}" if ns.blockdev else None
                    if dev and dev not in mounted:
                        signatures.append(probe_signature(root, runner, dev))
    with ph.phase("observe:boot-config"):
        boot = read_boot_config(root, bootloader)
    with ph.phase("observe:proc-sys"):
        release = (root.read_attr("/proc/sys/kernel/osrelease")
                   or parse.kernel_release_from_log(root.read_text("/proc/version"))
                   or parse.kernel_release_from_log(kmsg))
        return HostFacts(
            cmdline=parse.parse_cmdline(root.read_text("/proc/cmdline") or ""),
            firmware_map=read_firmware_map(root),
            iomem_pmem=read_iomem_pmem(root),
            regions=regions,
            mounts=mounts,
            mem_total=parse.parse_meminfo_total(root.read_text("/proc/meminfo")),
            numa=read_numa(root),
            kernel_log=parse.parse_kernel_log(kmsg),
            boot=boot,
            kernel_release=release,
            boot_id=root.read_attr("/proc/sys/kernel/random/boot_id"),
            signatures=tuple(signatures),
            paths=tuple(PathFact(p, root.exists(p), root.is_dir(p), tuple(root.symlinks_on_path(p)))
                        for p in mount_paths),
        )

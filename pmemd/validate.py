"""Host-aware validation and ``offset: auto`` placement. Pure.

The rules (docs/facts.md, "Rules"): each range lies inside one firmware
``System RAM`` entry, starts at or above 4 GiB, has start and size multiples of 128 MiB, overlaps
nothing else that reserves memory, leaves ``min_free_ram`` to the OS after the 1/64 struct-page
cost, stays within one NUMA node, and more than 4 regions draws a KASLR warning.
"""

from __future__ import annotations

from itertools import pairwise

from pmemd.facts import Cmdline, HostFacts, MemmapEntry, MemmapKind, MemRange
from pmemd.frozen import frozen
from pmemd.model import Config, KaslrPolicy, Namespace
from pmemd.parse import CORRUPT, parse_cmdline
from pmemd.state import Owned
from pmemd.units import GIB, MIB, human, render

ALIGN = 128 * MIB
LOW_LIMIT = 4 * GIB
KASLR_MAX_ENTRIES = 4
SYSTEM_RAM = ("System RAM", "usable")

WHY_ALIGN = (
    "start and size must be multiples of 128 MiB: kernels before 5.3 map pmem in 128 MiB "
    "memory sections and fail with 'attempted on mixed region' otherwise, and it also meets the "
    "2 MiB mapping and 16 MiB ndctl alignment rules"
)


@frozen
class Placement:
    name: str
    start: int
    size: int
    auto: bool
    why: str

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def token(self) -> str:
        return memmap_token(self.size, self.start)


@frozen
class Issue:
    severity: str  # error | warning | info
    namespace: str | None
    key: str  # config key path, e.g. namespaces.fast.offset
    message: str

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{self.severity}: {where}{self.message}"


def memmap_token(size: int, start: int) -> str:
    """Canonical ``memmap=<size>!<start>`` that the kernel parses back to the same range."""
    return f"memmap={render(size)}!{render(start)}"


def ram_entries(facts: HostFacts) -> tuple[MemRange, ...]:
    return tuple(r for r in facts.firmware_map if r.type in SYSTEM_RAM)


def _command_lines(facts: HostFacts) -> list[tuple[str, Cmdline]]:
    """The running command line and, when the boot config is readable, the next boot's."""
    lines = [("running", facts.cmdline)]
    if facts.boot.default_args is not None:
        lines.append(("next-boot", parse_cmdline(" ".join(facts.boot.default_args))))
    return lines


def pmemds(owned: Owned) -> set[str]:
    """The tokens that are pmemd's: in its boot config, taken out of it and still on the running
    command line until the pending reboot (they go with it), or those of its last trial boot
    (armed, running, failed or rolled back: a trial boot runs them without the default having
    them)."""
    removed = owned.pending_reboot.removed if owned.pending_reboot else ()
    return {*owned.kernel_args, *removed, *owned.trial.tokens, *owned.trial.committed}


def _foreign_memmap(facts: HostFacts, owned: Owned, ours: set[str]) -> list[tuple[str, MemmapEntry]]:
    """(command line, entry) for each memmap= piece pmemd did not write and does not want."""
    own = pmemds(owned)
    return [(label, e) for label, cl in _command_lines(facts) for e in cl.memmap
            if e.token not in own and e.token not in ours]


def foreign_reservations(facts: HostFacts, owned: Owned) -> list[tuple[int, int, str]]:
    """Ranges reserved by kernel arguments pmemd does not own (running and next boot)."""
    out: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    own = pmemds(owned)
    for _, cl in _command_lines(facts):
        for e in cl.memmap:
            if e.token in own or e.start is None or e.token in seen:
                continue
            if e.kind in (MemmapKind.PRAM, MemmapKind.RESERVED, MemmapKind.ACPI, MemmapKind.RAM):
                seen.add(e.token)
                out.append((e.start, e.start + e.size, f"{e.token} (not set by pmemd)"))
        if cl.crashkernel is not None:
            size, fixed = cl.crashkernel
            if fixed is not None:
                out.append((fixed, fixed + size, f"crashkernel={render(size)}@{render(fixed)}"))
    return out


def _node_of(facts: HostFacts, start: int, end: int) -> tuple[set[int], bool]:
    nodes: set[int] = set()
    for node, ranges in facts.numa:
        if any(s < end and start < e for s, e in ranges):
            nodes.add(node)
    return nodes, bool(facts.numa)


def validate(config: Config, facts: HostFacts, owned: Owned) -> tuple[dict[str, Placement], list[Issue]]:
    """Place every namespace (fixed offsets checked, ``auto`` ones chosen) and check them all."""
    problem = _map_problems(config, facts)
    if problem is not None:
        return {}, problem
    ram = ram_entries(facts)
    reserved = foreign_reservations(facts, owned)
    issues: list[Issue] = []
    placements: dict[str, Placement] = {}
    # Fixed offsets first, in name order, then auto placements: deterministic. Namespaces placed
    # before (recorded in the state file) go before new ones, so adding a namespace never takes
    # the range of an existing one and moves it (which would leave its data behind).
    fixed = sorted((n, ns) for n, ns in config.namespaces.items() if ns.offset != "auto")
    auto = sorted(((n, ns) for n, ns in config.namespaces.items() if ns.offset == "auto"),
                  key=lambda item: (item[0] not in owned.namespaces, item[0]))
    for name, ns in fixed:
        placed, errs = _place_fixed(name, ns, ram, facts)
        issues.extend(errs)
        if placed is not None:
            placements[name] = placed
    for name, ns in auto:
        taken = [(p.start, p.end, f"namespace {p.name}") for p in placements.values()] + reserved
        placed, errs = _place_auto(name, ns, ram, taken, facts, owned)
        issues.extend(errs)
        if placed is not None:
            placements[name] = placed
    return placements, issues + _cross_checks(config, facts, owned, placements, reserved)


def _map_problems(config: Config, facts: HostFacts) -> list[Issue] | None:
    """Errors that stop all placement: a corrupt or missing firmware map."""
    corrupt = [r.type.removeprefix(CORRUPT) for r in facts.firmware_map if r.type.startswith(CORRUPT)]
    if corrupt:
        # A damaged map cannot say where RAM is: judging ranges against the rest of it could
        # place a namespace on firmware memory, or refuse one for a wrong reason.
        return [Issue("error", None, "", f"the firmware memory map is corrupt: {why}; pmemd validates no range "
                      "against it (on a captured tree: capture it again)") for why in corrupt]
    if ram_entries(facts):
        return None
    if not config.namespaces:
        return []
    return [Issue("error", None, "", "the firmware memory map (/sys/firmware/memmap) is missing or unreadable, "
                  "so no range can be validated; run as root on the host itself")]


def _place_fixed(name: str, ns: Namespace, ram: tuple[MemRange, ...], facts: HostFacts
                 ) -> tuple[Placement | None, list[Issue]]:
    key = f"namespaces.{name}.offset"
    assert isinstance(ns.offset, int)
    start, size, end = ns.offset, ns.size, ns.offset + ns.size
    errs = _check_size(name, size)
    if end > 1 << 64:
        return None, [*errs, Issue("error", name, key, f"{render(start)} + size {render(size)} ends beyond "
                                   "2^64, the end of the physical address space; use offset: auto or an "
                                   "offset inside the firmware map's System RAM")]
    if start % ALIGN:
        lo, hi = start - start % ALIGN, start - start % ALIGN + ALIGN
        errs.append(Issue("error", name, key, f"{render(start)} is not a multiple of 128 MiB; use {render(lo)} "
                          f"or {render(hi)} ({WHY_ALIGN})"))
    if start < LOW_LIMIT:
        errs.append(Issue("error", name, key, f"{render(start)} is below 4 GiB, where the PCI hole, firmware "
                          "tables, the kernel, initrd and DMA32 allocations live; use an offset of 4G or "
                          "more, or offset: auto"))
    if not errs and not any(r.contains(start, end) for r in ram):
        touching = [r for r in facts.firmware_map if r.overlaps(start, end)]
        desc = "; ".join(f"{r.type} [{r.start:#x}-{r.end - 1:#x}]" for r in touching) or "no memory at all"
        fits = ", ".join(f"[{max(r.start, LOW_LIMIT):#x}-{r.end - 1:#x}]" for r in ram
                         if r.end - max(r.start, LOW_LIMIT) >= size)
        errs.append(Issue("error", name, key, f"range [{start:#x}-{end - 1:#x}] is not inside one firmware "
                          f"System RAM entry (it touches: {desc}); writing there could corrupt firmware "
                          f"memory or MMIO. System RAM at or above 4 GiB large enough: {fits or 'none'}; "
                          "or use offset: auto"))
    if errs:
        return None, errs
    return Placement(name, start, size, False, "fixed offset from the config"), []


def _place_auto(name: str, ns: Namespace, ram: tuple[MemRange, ...], taken: list[tuple[int, int, str]],
                facts: HostFacts, owned: Owned) -> tuple[Placement | None, list[Issue]]:
    errs = _check_size(name, ns.size)
    if errs:
        return None, errs
    prior = owned.namespaces.get(name)
    spot = None
    if prior is not None and prior.size == ns.size and _free(prior.start, prior.start + prior.size, ram,
                                                             taken, facts):
        spot = (prior.start, "kept from the previous placement (recorded in the state file)")
    spot = spot or _first_fit(ns.size, ram, taken, facts)
    if spot is None:
        return None, [Issue("error", name, f"namespaces.{name}.size",
                            f"no free 128 MiB-aligned range of {human(ns.size)} above 4 GiB inside one "
                            "firmware System RAM entry; reduce size or free other reservations")]
    return Placement(name, spot[0], ns.size, True, spot[1]), []


def _cross_checks(config: Config, facts: HostFacts, owned: Owned, placements: dict[str, Placement],
                  reserved: list[tuple[int, int, str]]) -> list[Issue]:
    """Checks of all placements together: overlaps, RAM headroom, NUMA, KASLR, foreign memmap=."""
    ours = {p.token for p in placements.values()}  # a token set outside pmemd but wanted as it is
    issues = [*_check_overlaps(placements, reserved),
              *_check_headroom(config, facts, placements, _foreign_memmap_bytes(facts, owned, ours)),
              *_check_numa(facts, placements)]
    foreign_pram = {e.token for e in facts.cmdline.pram if e.token not in pmemds(owned)}
    if len(placements) + len(foreign_pram) > KASLR_MAX_ENTRIES:
        issues.append(Issue("warning", None, "namespaces",
                            f"{len(placements) + len(foreign_pram)} memmap regions: the x86 boot code "
                            f"avoids at most {KASLR_MAX_ENTRIES} when it randomises the kernel's "
                            "physical address, and gives up randomising beyond that; fewer, larger "
                            "regions keep KASLR"))
    return issues + _foreign_memmap_warnings(facts, owned, ours)


def _foreign_memmap_warnings(facts: HostFacts, owned: Owned, ours: set[str]) -> list[Issue]:
    """Rule 2 (docs/facts.md): flag every memmap= reservation pmemd did not write (it never removes one)."""
    where: dict[str, list[str]] = {}
    kinds = (MemmapKind.PRAM, MemmapKind.RESERVED, MemmapKind.ACPI, MemmapKind.RAM, MemmapKind.CONVERT)
    for label, e in _foreign_memmap(facts, owned, ours):
        if e.kind in kinds and label not in where.get(e.token, []):
            where.setdefault(e.token, []).append(label)
    return [Issue("warning", None, "", f"{token} on the {' and '.join(labels)} command line was not set by "
                  "pmemd: pmemd leaves it alone and keeps its namespaces clear of it")
            for token, labels in where.items()]


def _check_size(name: str, size: int) -> list[Issue]:
    key = f"namespaces.{name}.size"
    if size < ALIGN:
        return [Issue("error", name, key, f"{human(size)} is too small; the minimum is 128M ({WHY_ALIGN})")]
    if size % ALIGN:
        lo = size - size % ALIGN
        return [Issue("error", name, key, f"{render(size)} is not a multiple of 128 MiB; use "
                      f"{render(lo) if lo else '128M'} or {render(lo + ALIGN)} ({WHY_ALIGN})")]
    return []


def _free(start: int, end: int, ram: tuple[MemRange, ...], taken: list[tuple[int, int, str]],
          facts: HostFacts) -> bool:
    if start < LOW_LIMIT or start % ALIGN:
        return False
    if not any(r.contains(start, end) for r in ram):
        return False
    if any(s < end and start < e for s, e, _ in taken):
        return False
    nodes, known = _node_of(facts, start, end)
    return not known or len(nodes) <= 1


def _first_fit(size: int, ram: tuple[MemRange, ...], taken: list[tuple[int, int, str]],
               facts: HostFacts) -> tuple[int, str] | None:
    for idx, r in enumerate(ram):
        start = max(r.start, LOW_LIMIT)
        start += (-start) % ALIGN
        while start + size <= r.end:
            end = start + size
            blocker = next(((s, e) for s, e, _ in taken if s < end and start < e), None)
            if blocker is not None:
                start = blocker[1] + (-blocker[1]) % ALIGN
                continue
            if _free(start, end, ram, taken, facts):
                return start, (f"lowest free 128 MiB-aligned range above 4 GiB in firmware System RAM "
                               f"entry {idx} [{r.start:#x}-{r.end - 1:#x}]")
            start += ALIGN
    return None


def _check_overlaps(placements: dict[str, Placement], reserved: list[tuple[int, int, str]]) -> list[Issue]:
    issues = []
    items = sorted(placements.values(), key=lambda p: p.start)
    for a, b in pairwise(items):
        if b.start < a.end:
            issues.append(Issue("error", b.name, f"namespaces.{b.name}.offset",
                                f"[{b.start:#x}-{b.end - 1:#x}] overlaps namespace {a.name} "
                                f"[{a.start:#x}-{a.end - 1:#x}]; move one of them"))
    for p in items:
        for s, e, what in reserved:
            if what.startswith(p.token + " "):
                continue  # the very same argument, set outside pmemd: not a conflict (see plan)
            if s < p.end and p.start < e:
                issues.append(Issue("error", p.name, f"namespaces.{p.name}.offset",
                                    f"[{p.start:#x}-{p.end - 1:#x}] overlaps {what} [{s:#x}-{e - 1:#x}]; "
                                    "move the namespace or remove that argument"))
    return issues


def _foreign_memmap_bytes(facts: HostFacts, owned: Owned, ours: set[str]) -> int:
    """RAM taken by memmap= reservations pmemd does not own (each token counted once)."""
    seen: dict[str, int] = {}
    for _, e in _foreign_memmap(facts, owned, ours):
        if e.kind in (MemmapKind.PRAM, MemmapKind.RESERVED, MemmapKind.ACPI):
            seen[e.piece + "\0" + e.token] = e.size
    return sum(seen.values())


def _check_headroom(config: Config, facts: HostFacts, placements: dict[str, Placement],
                    foreign: int = 0) -> list[Issue]:
    ram_total = sum(r.size for r in ram_entries(facts))
    reserved = sum(p.size for p in placements.values())
    struct_pages = reserved // 64
    crash = facts.cmdline.crashkernel[0] if facts.cmdline.crashkernel else 0
    left = ram_total - reserved - struct_pages - crash - foreign
    floor = config.settings.min_free_ram
    if placements and left < floor:
        return [Issue("error", None, "settings.min_free_ram",
                      f"only {human(max(left, 0))} of {human(ram_total)} RAM would stay with the OS "
                      f"({human(reserved)} reserved + {human(struct_pages)} struct pages"
                      + (f" + {human(crash)} crashkernel" if crash else "")
                      + (f" + {human(foreign)} reserved by memmap= arguments not set by pmemd" if foreign else "")
                      + f"), less than min_free_ram {human(floor)}; reduce the namespace sizes or "
                      "lower min_free_ram")]
    return []


def _check_numa(facts: HostFacts, placements: dict[str, Placement]) -> list[Issue]:
    issues = []
    for p in placements.values():
        nodes, known = _node_of(facts, p.start, p.end)
        if known and len(nodes) > 1:
            issues.append(Issue("error", p.name, f"namespaces.{p.name}.offset",
                                f"[{p.start:#x}-{p.end - 1:#x}] spans NUMA nodes {sorted(nodes)}; the "
                                "kernel reports one node for the whole region: keep it inside one node"))
    for node, ranges in facts.numa:
        total = sum(e - s for s, e in ranges)
        covered = sum(max(0, min(e, p.end) - max(s, p.start)) for s, e in ranges for p in placements.values())
        if total and covered >= total:
            issues.append(Issue("error", None, "namespaces",
                                f"the namespaces would take all RAM of NUMA node {node}; leave it some"))
    return issues


def kaslr_token(config: Config, facts: HostFacts) -> tuple[str | None, str]:
    """``nokaslr`` if the policy wants it, and why."""
    policy = config.settings.kaslr
    if policy is KaslrPolicy.DISABLE:
        return "nokaslr", "settings.kaslr: disable"
    if policy is KaslrPolicy.KEEP:
        return None, "settings.kaslr: keep"
    if not config.namespaces:
        return None, "no namespaces"
    ram_total = sum(r.size for r in ram_entries(facts))
    if ram_total and ram_total <= 16 * GIB:
        return "nokaslr", (f"settings.kaslr: auto and this host has {human(ram_total)} RAM (<= 16 GiB): "
                           "the pmem.io how-to advises disabling KASLR there so the kernel cannot land "
                           "in a reserved range")
    return None, f"settings.kaslr: auto and this host has {human(ram_total)} RAM (> 16 GiB)"

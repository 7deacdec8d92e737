"""Tier 1: validation of namespaces against a host's memory map, and ``offset: auto``.

Hosts are HostFacts built in memory (tests/helpers.py ``make_facts``) with the QEMU ``-m 16G``
firmware map of a -m 16G QEMU guest (docs/facts.md) or a 64 GiB variant; NUMA cases go through a host tree's
``/sys/devices/system/node/nodeN/memoryM`` files and the real observer.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from helpers import BIG_64G, GIB, MIB, QEMU_PC_16G, HostTree, config, make_facts
from hypothesis import given
from hypothesis import strategies as st

from pmemd.fsroot import Root
from pmemd.observe import read_numa
from pmemd.state import Owned, OwnedNamespace
from pmemd.validate import Issue, Placement, kaslr_token, memmap_token, validate


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


def one(ns: dict[str, object], firmware: object = QEMU_PC_16G,
        **kw: object) -> tuple[dict[str, Placement], list[Issue]]:
    return validate(config({"x": ns}), make_facts(firmware=firmware, **kw), Owned())  # type: ignore[arg-type]


# --- alignment, size, low memory -------------------------------------------------------------


def test_aligned_offset_passes() -> None:
    placements, issues = one({"size": "1G", "offset": "0x148000000"})  # 5G + 128M
    assert issues == [] and placements["x"].start == 0x148000000
    assert placements["x"].token == "memmap=1G!5248M"  # noqa: S105


@pytest.mark.parametrize(("offset", "suggest"), [
    ("0x144000000", "5184M is not a multiple of 128 MiB; use 5G or 5248M"),  # 5G + 64M
    ("5121M", "5121M is not a multiple of 128 MiB; use 5G or 5248M"),
    ("0x43ffffff0", "use 17280M or 17G"),
])
def test_misaligned_offset_suggests_the_nearest_aligned_values(offset: str, suggest: str) -> None:
    _, issues = one({"size": "1G", "offset": offset})
    (err,) = errors(issues)
    assert err.key == "namespaces.x.offset" and suggest in err.message, err.message
    assert "128 MiB memory sections" in err.message  # says why


@pytest.mark.parametrize(("size", "suggest"), [
    ("1088M", "1088M is not a multiple of 128 MiB; use 1G or 1152M"),
    ("0x40001000", "use 1G or 1152M"),
    ("200M", "use 128M or 256M"),
    ("64M", "is too small; the minimum is 128M"),
    ("4K", "is too small"),
])
def test_misaligned_or_tiny_size(size: str, suggest: str) -> None:
    _, issues = one({"size": size, "offset": "5G"})
    (err,) = errors(issues)
    assert err.key == "namespaces.x.size" and suggest in err.message, err.message


@pytest.mark.parametrize("offset", ["0", "2G", "3968M"])
def test_below_4g_is_refused(offset: str) -> None:
    _, issues = one({"size": "128M", "offset": offset})
    (err,) = errors(issues)
    assert err.key == "namespaces.x.offset" and "is below 4 GiB" in err.message and "offset: auto" in err.message


def test_auto_never_goes_below_4g_even_when_only_low_ram_is_free() -> None:
    low_only = ((0, 0x9FC00, "System RAM"), (0x100000, 0xBFFDD000, "System RAM"))
    placements, issues = one({"size": "512M"}, firmware=low_only)
    assert placements == {}
    (err,) = errors(issues)
    assert err.key == "namespaces.x.size" and "no free 128 MiB-aligned range of 512 MiB above 4 GiB" in err.message


# --- the firmware map ------------------------------------------------------------------------


def test_range_over_a_reserved_firmware_entry() -> None:
    fw = ((0x100000, 0xBFFDD000, "System RAM"), (0x100000000, 0x200000000, "System RAM"),
          (0x200000000, 0x210000000, "Reserved"), (0x210000000, 0x440000000, "System RAM"))
    _, issues = one({"size": "1G", "offset": "8G"}, firmware=fw)
    (err,) = errors(issues)
    assert "is not inside one firmware System RAM entry" in err.message
    assert "Reserved [0x200000000-0x20fffffff]" in err.message and "offset: auto" in err.message


def test_range_over_a_hole() -> None:
    _, issues = one({"size": "1G", "offset": "17G"})  # RAM ends at 17 GiB on the -m 16G map
    (err,) = errors(issues)
    assert "(it touches: no memory at all)" in err.message
    assert "System RAM at or above 4 GiB large enough: [0x100000000-0x43fffffff]" in err.message


def test_range_crossing_the_end_of_ram() -> None:
    _, issues = one({"size": "1G", "offset": "16640M"})  # 16.25G .. 17.25G
    (err,) = errors(issues)
    assert "System RAM [0x100000000-0x43fffffff]" in err.message


def test_range_across_two_adjacent_ram_entries_is_refused() -> None:
    fw = ((0x100000000, 0x200000000, "System RAM"), (0x200000000, 0x400000000, "System RAM"))
    _, issues = one({"size": "1G", "offset": "7680M"}, firmware=fw)  # 7.5G .. 8.5G
    assert "not inside one firmware System RAM entry" in errors(issues)[0].message


def test_pmem_and_acpi_entries_in_the_firmware_map_are_not_ram() -> None:
    fw = ((0x100000000, 0x140000000, "System RAM"), (0x140000000, 0x180000000, "Persistent Memory (legacy)"),
          (0x180000000, 0x1C0000000, "ACPI Non-volatile Storage"), (0x1C0000000, 0x440000000, "System RAM"))
    for off in ("5G", "6G"):
        _, issues = one({"size": "1G", "offset": off}, firmware=fw)
        assert errors(issues), off
    placements, issues = one({"size": "2G"}, firmware=fw)
    assert placements["x"].start == 7 * GIB and issues == []  # 4G-5G is too small, 5G-7G is not RAM


def test_missing_firmware_map_is_an_error_with_namespaces_only() -> None:
    placements, issues = validate(config({"x": {"size": "1G"}}), make_facts(firmware=()), Owned())
    assert placements == {} and "firmware memory map (/sys/firmware/memmap) is missing" in errors(issues)[0].message
    assert validate(config({}), make_facts(firmware=()), Owned()) == ({}, [])


# --- overlaps --------------------------------------------------------------------------------


def test_overlap_between_namespaces() -> None:
    cfg = config({"a": {"size": "2G", "offset": "5G"}, "b": {"size": "1G", "offset": "6G"}})
    _, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G), Owned())
    (err,) = errors(issues)
    assert err.namespace == "b" and "overlaps namespace a [0x140000000-0x1bfffffff]" in err.message


def test_adjacent_namespaces_do_not_overlap() -> None:
    cfg = config({"a": {"size": "1G", "offset": "5G"}, "b": {"size": "1G", "offset": "6G"}})
    assert validate(cfg, make_facts(firmware=QEMU_PC_16G), Owned())[1] == []


@pytest.mark.parametrize(("cmdline", "what"), [
    ("memmap=1G!8G", "memmap=1G!8G (not set by pmemd)"),
    ("memmap=2G$7G", "memmap=2G$7G (not set by pmemd)"),
    ("memmap=512M#8704M", "memmap=512M#8704M (not set by pmemd)"),
    ("memmap=8G!2G,1G!8G", "memmap=8G!2G,1G!8G (not set by pmemd)"),
    ("crashkernel=256M@8G", "crashkernel=256M@8G"),
])
def test_overlap_with_a_foreign_reservation_on_the_running_cmdline(cmdline: str, what: str) -> None:
    _, issues = one({"size": "2G", "offset": "7G"}, cmdline=f"root=/dev/vda1 ro {cmdline}")
    err = errors(issues)[0]
    assert err.key == "namespaces.x.offset" and f"overlaps {what}" in err.message, err.message
    assert "move the namespace or remove that argument" in err.message


def test_overlap_with_a_foreign_memmap_only_in_the_next_boot_config() -> None:
    _, issues = one({"size": "1G", "offset": "8G"}, next_args=["root=/dev/vda1", "memmap=512M!8704M"])
    assert "overlaps memmap=512M!8704M (not set by pmemd)" in errors(issues)[0].message


def test_the_very_same_foreign_token_is_used_as_it_is_not_an_overlap() -> None:
    """A namespace declaring exactly an admin's memmap=1G!8G adopts it (see test_plan for the
    boot-config side: pmemd neither writes nor removes that token)."""
    placements, issues = one({"size": "1G", "offset": "8G"}, cmdline="root=/dev/vda1 memmap=1G!8G")
    assert issues == [] and placements["x"].token == "memmap=1G!8G"  # noqa: S105
    # a piece of someone else's comma-joined argument is not the same argument: an overlap
    _, issues = one({"size": "1G", "offset": "8G"}, cmdline="root=/dev/vda1 memmap=1G!8G,1G!10G")
    assert "overlaps memmap=1G!8G,1G!10G (not set by pmemd)" in errors(issues)[0].message
    _, issues = one({"size": "512M", "offset": "8G"}, cmdline="root=/dev/vda1 memmap=1G!8G")
    assert "overlaps memmap=1G!8G (not set by pmemd)" in errors(issues)[0].message


def test_pmemd_own_token_is_not_foreign() -> None:
    facts = make_facts(firmware=QEMU_PC_16G, cmdline="root=/dev/vda1 memmap=1G!8G")
    owned = Owned(kernel_args=("memmap=1G!8G",))
    _, issues = validate(config({"x": {"size": "1G", "offset": "8G"}}), facts, owned)
    assert issues == []


def test_foreign_memmap_is_reported_even_without_an_overlap() -> None:
    _, issues = one({"size": "1G", "offset": "5G"}, cmdline="root=/dev/vda1 memmap=1G!8G",
                    next_args=["root=/dev/vda1", "memmap=1G!8G", "memmap=256M$12G"])
    assert errors(issues) == []
    assert [str(i) for i in issues] == [
        "warning: memmap=1G!8G on the running and next-boot command line was not set by pmemd: pmemd leaves "
        "it alone and keeps its namespaces clear of it",
        "warning: memmap=256M$12G on the next-boot command line was not set by pmemd: pmemd leaves it alone "
        "and keeps its namespaces clear of it",
    ]


def test_auto_placement_steps_around_foreign_reservations_and_fixed_namespaces() -> None:
    cfg = config({"fixed": {"size": "1G", "offset": "4G"}, "auto": {"size": "1G"}})
    facts = make_facts(firmware=QEMU_PC_16G, cmdline="root=/dev/vda1 memmap=512M!5G crashkernel=256M@5632M")
    placements, issues = validate(cfg, facts, Owned())
    assert errors(issues) == []
    assert placements["auto"].start == 5888 * MIB  # 4G taken, 5G-5.5G memmap, 5.5G-5.75G crashkernel
    assert placements["auto"].auto and "lowest free 128 MiB-aligned range above 4 GiB" in placements["auto"].why


# --- RAM headroom ----------------------------------------------------------------------------

RAM_16G = sum(e - s for s, e, t in QEMU_PC_16G if t == "System RAM")


@pytest.mark.parametrize(("delta", "ok"), [(0, True), (1, False)])
def test_min_free_ram_counts_size_over_64(delta: int, ok: bool) -> None:
    size = 8 * GIB
    floor = RAM_16G - size - size // 64 + delta  # struct pages: 1/64 of the pmem size, from RAM
    cfg = config({"x": {"size": "8G", "offset": "5G"}}, min_free_ram=floor)
    _, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G), Owned())
    if ok:
        assert issues == []
    else:
        (err,) = errors(issues)
        assert err.key == "settings.min_free_ram" and "128 MiB struct pages" in err.message
        assert "reduce the namespace sizes or lower min_free_ram" in err.message


def test_headroom_counts_crashkernel_and_foreign_reservations() -> None:
    cfg = config({"x": {"size": "8G", "offset": "5G"}}, min_free_ram="6G")
    assert validate(cfg, make_facts(firmware=QEMU_PC_16G), Owned())[1] == []  # ~7.87 GiB left
    facts = make_facts(firmware=QEMU_PC_16G, cmdline="root=/dev/vda1 crashkernel=1G memmap=1G!14G")
    (err,) = errors(validate(cfg, facts, Owned())[1])
    assert "+ 1 GiB crashkernel" in err.message
    assert "+ 1 GiB reserved by memmap= arguments not set by pmemd" in err.message


def test_headroom_default_is_4g() -> None:
    cfg = config({"x": {"size": "12G"}})  # min_free_ram from helpers.config is 1G; set the default
    cfg = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"min_free_ram": 4 * GIB})})
    _, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G), Owned())
    assert "less than min_free_ram 4 GiB" in errors(issues)[0].message


# --- NUMA ------------------------------------------------------------------------------------


def numa_tree(tmp_path: Path) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
    """Two nodes: node0 = 0-3 GiB and 4-10 GiB, node1 = 10-17 GiB (memory blocks of 128 MiB)."""
    t = HostTree(tmp_path / "numa")
    t.numa(128 * MIB, {0: [(0, 3 * GIB), (4 * GIB, 10 * GIB)], 1: [(10 * GIB, 17 * GIB)]})
    return read_numa(Root(t.path))


def test_numa_files_are_read_into_ranges(tmp_path: Path) -> None:
    assert numa_tree(tmp_path) == ((0, ((0, 3 * GIB), (4 * GIB, 10 * GIB))), (1, ((10 * GIB, 17 * GIB),)))


def test_namespace_spanning_two_numa_nodes(tmp_path: Path) -> None:
    numa = numa_tree(tmp_path)
    _, issues = one({"size": "2G", "offset": "9G"}, numa=numa)
    (err,) = errors(issues)
    assert "spans NUMA nodes [0, 1]" in err.message and "keep it inside one node" in err.message
    assert one({"size": "1G", "offset": "9G"}, numa=numa)[1] == []


def test_auto_placement_does_not_span_nodes(tmp_path: Path) -> None:
    numa = numa_tree(tmp_path)
    cfg = config({"a": {"size": "5G"}, "b": {"size": "2G"}})
    placements, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G, numa=numa), Owned())
    assert issues == []
    assert (placements["a"].start, placements["b"].start) == (4 * GIB, 10 * GIB)  # b skips 9G..11G


def test_namespaces_may_not_take_all_ram_of_a_node(tmp_path: Path) -> None:
    numa = numa_tree(tmp_path)
    cfg = config({"x": {"size": "7G", "offset": "10G"}}, min_free_ram="1G")
    _, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G, numa=numa), Owned())
    assert any("would take all RAM of NUMA node 1" in i.message for i in errors(issues))


# --- more than 4 regions -----------------------------------------------------------------------


def test_more_than_4_regions_draws_a_kaslr_warning() -> None:
    cfg = config({f"n{i}": {"size": "1G"} for i in range(5)})
    placements, issues = validate(cfg, make_facts(), Owned())
    assert len(placements) == 5
    (warn,) = issues
    assert warn.severity == "warning" and "5 memmap regions" in warn.message and "at most 4" in warn.message
    assert validate(config({f"n{i}": {"size": "1G"} for i in range(4)}), make_facts(), Owned())[1] == []


def test_foreign_regions_count_towards_the_kaslr_limit() -> None:
    cfg = config({f"n{i}": {"size": "1G"} for i in range(4)})
    _, issues = validate(cfg, make_facts(cmdline="root=/dev/vda1 memmap=1G!60G"), Owned())
    assert any("5 memmap regions" in i.message for i in issues)


# --- offset: auto, determinism and stability -------------------------------------------------


def test_auto_is_deterministic() -> None:
    cfg = config({"b": {"size": "1G"}, "a": {"size": "512M"}, "c": {"size": "2G", "offset": "6G"}})
    facts = make_facts(firmware=QEMU_PC_16G)
    first = validate(cfg, facts, Owned())
    second = validate(cfg, facts, Owned())
    assert first == second
    assert {n: p.start for n, p in first[0].items()} == {"c": 6 * GIB, "a": 4 * GIB, "b": 4 * GIB + 512 * MIB}


def test_auto_keeps_the_previous_placement_from_the_state_file() -> None:
    cfg = config({"x": {"size": "1G"}})
    owned = Owned(namespaces={"x": OwnedNamespace(start=9 * GIB, size=GIB)})
    placements, issues = validate(cfg, make_facts(firmware=QEMU_PC_16G), owned)
    assert issues == [] and placements["x"].start == 9 * GIB
    assert placements["x"].why == "kept from the previous placement (recorded in the state file)"


def test_a_new_auto_namespace_never_moves_an_existing_one() -> None:
    """'a' sorts before 'b', but b was placed first (state file): a must not take b's range."""
    cfg = config({"a": {"size": "1G"}, "b": {"size": "1G"}})
    owned = Owned(namespaces={"b": OwnedNamespace(start=4 * GIB, size=GIB)})
    placements, _ = validate(cfg, make_facts(firmware=QEMU_PC_16G), owned)
    assert placements["b"].start == 4 * GIB and placements["a"].start == 5 * GIB


@pytest.mark.parametrize(("prior", "why"), [
    (OwnedNamespace(start=9 * GIB, size=2 * GIB), "size changed"),
    (OwnedNamespace(start=2 * GIB, size=GIB), "below 4 GiB"),
    (OwnedNamespace(start=17 * GIB, size=GIB), "outside RAM"),
    (OwnedNamespace(start=9 * GIB + 64 * MIB, size=GIB), "misaligned"),
])
def test_auto_replaces_when_the_previous_placement_is_no_longer_valid(prior: OwnedNamespace, why: str) -> None:
    placements, issues = validate(config({"x": {"size": "1G"}}), make_facts(firmware=QEMU_PC_16G),
                                  Owned(namespaces={"x": prior}))
    assert issues == [] and placements["x"].start == 4 * GIB, why


def test_auto_moves_away_from_a_previous_placement_now_reserved_by_someone_else() -> None:
    owned = Owned(namespaces={"x": OwnedNamespace(start=4 * GIB, size=GIB)})
    facts = make_facts(firmware=QEMU_PC_16G, cmdline="root=/dev/vda1 memmap=1G!4G")
    placements, issues = validate(config({"x": {"size": "1G"}}), facts, owned)
    assert placements["x"].start == 5 * GIB and errors(issues) == []


@given(st.lists(st.integers(1, 8), min_size=1, max_size=6), st.data())
def test_auto_placements_are_valid_disjoint_and_stable(sizes: list[int], data: st.DataObject) -> None:
    names = [f"n{i}" for i in range(len(sizes))]
    cfg = config({n: {"size": f"{s * 128}M"} for n, s in zip(names, sizes, strict=True)}, min_free_ram="128M")
    facts = make_facts(firmware=QEMU_PC_16G)
    placements, issues = validate(cfg, facts, Owned())
    assert not errors(issues)
    ranges = sorted((p.start, p.end) for p in placements.values())
    for (_s1, e1), (s2, _e2) in itertools.pairwise(ranges):
        assert e1 <= s2
    for p in placements.values():
        assert p.start >= 4 * GIB and p.start % (128 * MIB) == 0 and p.end <= 0x440000000
    # Recording them and validating again (in any name order) keeps every placement.
    owned = Owned(namespaces={n: OwnedNamespace(p.start, p.size) for n, p in placements.items()})
    extra = data.draw(st.integers(1, 4))
    cfg2 = config({**{n: {"size": f"{s * 128}M"} for n, s in zip(names, sizes, strict=True)},
                   "a-new": {"size": f"{extra * 128}M"}}, min_free_ram="128M")
    again, issues2 = validate(cfg2, facts, owned)
    assert not errors(issues2)
    assert {n: again[n].start for n in names} == {n: p.start for n, p in placements.items()}


# --- KASLR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("firmware", "policy", "token"), [
    (QEMU_PC_16G, "auto", "nokaslr"),  # just under 16 GiB of RAM
    (BIG_64G, "auto", None),
    (BIG_64G, "disable", "nokaslr"),
    (QEMU_PC_16G, "keep", None),
])
def test_kaslr_policy(firmware: object, policy: str, token: str | None) -> None:
    tok, why = kaslr_token(config({"x": {"size": "1G"}}, kaslr=policy), make_facts(firmware=firmware))  # type: ignore[arg-type]
    assert tok == token and why.startswith(f"settings.kaslr: {policy}")


def test_kaslr_auto_without_namespaces_adds_nothing() -> None:
    assert kaslr_token(config({}, kaslr="auto"), make_facts(firmware=QEMU_PC_16G)) == (None, "no namespaces")


def test_memmap_token_is_canonical() -> None:
    assert memmap_token(GIB, 5 * GIB) == "memmap=1G!5G"
    assert memmap_token(1536 * MIB, 0x100000000) == "memmap=1536M!4G"
    assert memmap_token(128 * MIB, 4 * GIB + 128 * MIB) == "memmap=128M!4224M"

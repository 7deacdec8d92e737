"""Tier 1: the pure parsers of host sources, against verbatim captures where they exist.

Captures used: the real Debian 13 guest tree ``tests/fixtures/hosts/debian13-qemu-plain``
(``proc/cmdline``, ``proc/iomem``, ``proc/self/mountinfo``, ``dev/kmsg``, ``sys/firmware/memmap``)
and verbatim outputs of Debian 13 QEMU guests (quoted below as such).
"""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from pmemd.facts import MemmapKind, MemRange
from pmemd.parse import (
    kernel_release_from_log,
    kmsg_messages,
    parse_blkid_export,
    parse_cmdline,
    parse_firmware_entry,
    parse_int_attr,
    parse_iomem,
    parse_kernel_log,
    parse_meminfo_total,
    parse_memmap_value,
    parse_mountinfo,
    parse_wipefs_json,
    split_cmdline,
)
from pmemd.units import GIB, MIB
from pmemd.validate import memmap_token

PLAIN = FIXTURES / "debian13-qemu-plain"

# --- kernel command line ---------------------------------------------------------------------


def test_single_pram_entry() -> None:
    c = parse_cmdline("root=/dev/vda1 ro memmap=4G!12G quiet")
    assert [(e.kind, e.size, e.start) for e in c.memmap] == [(MemmapKind.PRAM, 4 * GIB, 12 * GIB)]
    assert c.pram[0].end == 16 * GIB
    assert c.limits == ()
    assert c.has("memmap=4G!12G") and c.has("quiet")


def test_comma_joined_entries_are_separate_regions() -> None:
    c = parse_cmdline("memmap=2G!12G,2G!14G")
    assert [(e.kind, e.size, e.start) for e in c.memmap] == [
        (MemmapKind.PRAM, 2 * GIB, 12 * GIB), (MemmapKind.PRAM, 2 * GIB, 14 * GIB)]
    assert {e.token for e in c.memmap} == {"memmap=2G!12G,2G!14G"}
    assert [e.piece for e in c.memmap] == ["2G!12G", "2G!14G"]


def test_repeated_memmap_args_all_count() -> None:
    c = parse_cmdline("memmap=2G!12G memmap=2G!14G memmap=512M!2G")
    assert [(e.size, e.start) for e in c.pram] == [(2 * GIB, 12 * GIB), (2 * GIB, 14 * GIB), (512 * MIB, 2 * GIB)]
    assert [e.token for e in c.pram] == ["memmap=2G!12G", "memmap=2G!14G", "memmap=512M!2G"]


@pytest.mark.parametrize("token", [
    "memmap=4GB!12G",  # 'B' is no separator: "limit RAM to 4 GiB"
    "memmap=4G",  # no separator at all (e.g. a '$12G' GRUB ate)
    "memmap=32M",
    "memmap=4gb!12G",
    "mem=8G",
    "memmap=exactmap",
])
def test_tokens_that_limit_ram_are_flagged(token: str) -> None:
    c = parse_cmdline(f"root=/dev/sda1 {token} quiet")
    assert c.limits == (token,)
    assert c.pram == ()


def test_limit_entry_kind_and_size() -> None:
    (e,) = parse_cmdline("memmap=4GB!12G").memmap
    assert e.kind is MemmapKind.LIMIT and e.size == 4 * GIB and e.start is None and e.end is None


def test_reserved_form() -> None:
    c = parse_cmdline("memmap=4G$12G")
    assert [(e.kind, e.size, e.start) for e in c.memmap] == [(MemmapKind.RESERVED, 4 * GIB, 12 * GIB)]
    assert c.limits == () and c.pram == ()


@pytest.mark.parametrize(("value", "kind"), [
    ("1G@4G", MemmapKind.RAM),
    ("1G#4G", MemmapKind.ACPI),
    ("1G$4G", MemmapKind.RESERVED),
    ("1G!4G", MemmapKind.PRAM),
    ("1G%4G-1+12", MemmapKind.CONVERT),
    ("1G", MemmapKind.LIMIT),
    ("1G?4G", MemmapKind.LIMIT),
    ("exactmap", MemmapKind.EXACTMAP),
    ("", MemmapKind.IGNORED),
    ("junk!4G", MemmapKind.IGNORED),  # no number consumed: the kernel returns -EINVAL, ignored
])
def test_action_character_selects_the_kind(value: str, kind: MemmapKind) -> None:
    (e,) = parse_memmap_value(value, "memmap=" + value)
    assert e.kind is kind


def test_trailing_garbage_after_start_still_adds_the_region() -> None:
    # the kernel: memmap=4G!12GB still adds the region, then returns -EINVAL (ignored)
    (e,) = parse_cmdline("memmap=4G!12GB").memmap
    assert (e.kind, e.size, e.start) == (MemmapKind.PRAM, 4 * GIB, 12 * GIB)


def test_kernel_number_syntax_in_memmap() -> None:
    c = parse_cmdline("memmap=0x40000000!0x300000000 memmap=010G!32G")
    assert [(e.size, e.start) for e in c.pram] == [(GIB, 12 * GIB), (8 * GIB, 32 * GIB)]  # 010G is octal


def test_exactmap_with_entries() -> None:
    c = parse_cmdline("memmap=exactmap,640K@0,3G@1M")
    assert [e.kind for e in c.memmap] == [MemmapKind.EXACTMAP, MemmapKind.RAM, MemmapKind.RAM]
    assert c.limits == ("memmap=exactmap,640K@0,3G@1M",)


@pytest.mark.parametrize(("text", "crash"), [
    ("crashkernel=256M@16G", (256 * MIB, 16 * GIB)),
    ("crashkernel=512M", (512 * MIB, None)),
    ("crashkernel=0x10000000@0x400000000", (256 * MIB, 16 * GIB)),
    ("crashkernel=1G-4G:192M,4G-64G:256M", None),  # range syntax: auto-placed, not a fixed range
    ("crashkernel=256M,high", None),
    ("quiet", None),
])
def test_crashkernel(text: str, crash: tuple[int, int | None] | None) -> None:
    assert parse_cmdline(text).crashkernel == crash


def test_quoted_arguments_group_words() -> None:
    c = parse_cmdline('root=/dev/vda1 dyndbg="file drivers/nvdimm/e820.c +p" memmap=1G!8G "quoted word"')
    assert c.tokens == ("root=/dev/vda1", "dyndbg=file drivers/nvdimm/e820.c +p", "memmap=1G!8G", "quoted word")
    assert [(e.size, e.start) for e in c.pram] == [(GIB, 8 * GIB)]


def test_quoted_memmap_inside_another_arg_is_not_memmap() -> None:
    c = parse_cmdline('foo="memmap=4G" bar')
    assert c.memmap == () and c.limits == ()


def test_split_cmdline_whitespace() -> None:
    assert split_cmdline("  a\tb\n c  ") == ("a", "b", "c")
    assert split_cmdline("") == ()
    assert split_cmdline('""') == ("",)


def test_real_captured_cmdline() -> None:
    c = parse_cmdline((PLAIN / "proc/cmdline").read_text())
    # (the UUID and kernel version change when the tree is re-captured)
    assert c.tokens[0].startswith("BOOT_IMAGE=/boot/vmlinuz-6.")
    assert c.tokens[1].startswith("root=UUID=")
    assert c.tokens[2:] == ("ro", "console=ttyS0,115200", "quiet")
    assert c.memmap == () and c.limits == () and c.crashkernel is None


def test_guest_md_variant_a_cmdline() -> None:
    """A Debian 13 guest, direct kernel boot (`cat /proc/cmdline`)."""
    c = parse_cmdline("root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1 memmap=512M!2G "
                      "memmap=256M!2600M memmap=100M!2944M")
    assert [(e.start, e.end) for e in c.pram] == [
        (0x80000000, 0xA0000000), (0xA2800000, 0xB2800000), (0xB8000000, 0xBE400000)]


def test_guest_md_grub_cycle_with_eaten_dollar() -> None:
    """A Debian 13 guest booted after `memmap=64M\\\\\\$2944M`: the kernel sees `$`, a reserved range."""
    c = parse_cmdline("BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=UUID=x ro console=ttyS0,115200 "
                      "memmap=512M!2G memmap=64M$2944M")
    assert [(e.kind, e.start) for e in c.memmap] == [(MemmapKind.PRAM, 2 * GIB), (MemmapKind.RESERVED, 2944 * MIB)]
    # ... and when GRUB eats "$2944M" what is left is a memory limit:
    assert parse_cmdline("memmap=64M").limits == ("memmap=64M",)


sizes = st.integers(min_value=1, max_value=2**40).map(lambda n: n * 4096)
starts = st.integers(min_value=0, max_value=2**40).map(lambda n: n * 4096)


@given(sizes, starts)
def test_canonical_token_parses_back_to_the_same_range(size: int, start: int) -> None:
    token = memmap_token(size, start)
    c = parse_cmdline(f"root=/dev/vda1 {token} quiet")
    assert [(e.kind, e.size, e.start, e.token) for e in c.memmap] == [(MemmapKind.PRAM, size, start, token)]
    assert c.limits == ()


@given(st.lists(st.tuples(sizes, starts), min_size=1, max_size=6))
def test_comma_joined_canonical_tokens_parse_back(ranges: list[tuple[int, int]]) -> None:
    pieces = [memmap_token(s, o).removeprefix("memmap=") for s, o in ranges]
    c = parse_cmdline("memmap=" + ",".join(pieces))
    assert [(e.size, e.start) for e in c.pram] == ranges
    assert c.limits == ()


@given(st.integers(min_value=0, max_value=2**50))
def test_canonical_token_has_no_dangerous_characters(value: int) -> None:
    token = memmap_token(value or 4096, value)
    assert "$" not in token and "B" not in token and '"' not in token and "\\" not in token
    assert token.count("!") == 1


# --- memory maps -----------------------------------------------------------------------------


def test_firmware_entry_end_is_inclusive() -> None:
    r = parse_firmware_entry("0x100000000\n", "0x23fffffff\n", "System RAM\n")
    assert r == MemRange(0x100000000, 0x240000000, "System RAM")
    assert r.size == 5 * GIB


def test_real_captured_firmware_map() -> None:
    base = PLAIN / "sys/firmware/memmap"
    entries = sorted((parse_firmware_entry((d / "start").read_text(), (d / "end").read_text(),
                                           (d / "type").read_text()) for d in base.iterdir()),
                     key=lambda r: r.start)
    ram = [(r.start, r.end) for r in entries if r.type == "System RAM"]
    assert ram == [(0, 0x9FC00), (0x100000, 0xBFFDD000), (0x100000000, 0x240000000)]
    assert {r.type for r in entries} == {"System RAM", "Reserved"}


def test_real_captured_iomem_has_no_pmem() -> None:
    entries = parse_iomem((PLAIN / "proc/iomem").read_text())
    assert not [e for e in entries if e.name.startswith("Persistent Memory")]
    ram = [(e.start, e.end) for e in entries if e.name == "System RAM"]
    assert ram == [(0x1000, 0x9FC00), (0x100000, 0xBFFDD000), (0x100000000, 0x240000000)]
    kernel = [c for e in entries if e.name == "System RAM" for c in e.children]
    assert kernel == ["Kernel code", "Kernel rodata", "Kernel data", "Kernel bss"]  # wherever KASLR put it
    pci = next(e for e in entries if e.start == 0xC0000000)
    assert "virtio-pci-modern" not in pci.children  # grandchildren are not direct children
    assert all(c.startswith("0000:00:") for c in pci.children)


GUEST_IOMEM = """\
80000000-9fffffff : Persistent Memory (legacy)
  80000000-9fffffff : namespace0.0
a2800000-b27fffff : Persistent Memory (legacy)
  a2800000-b27fffff : namespace1.0
b8000000-be3fffff : Persistent Memory (legacy)
  b8000000-be3fffff : namespace2.0
fd00000000-ffffffffff : Reserved
"""


def test_guest_md_iomem_pmem_ranges() -> None:
    """A Debian 13 guest: `grep -i -A1 persistent /proc/iomem` (verbatim)."""
    entries = [e for e in parse_iomem(GUEST_IOMEM) if e.name.startswith("Persistent Memory")]
    assert [(e.start, e.end, e.children) for e in entries] == [
        (0x80000000, 0xA0000000, ("namespace0.0",)),
        (0xA2800000, 0xB2800000, ("namespace1.0",)),
        (0xB8000000, 0xBE400000, ("namespace2.0",)),
    ]


# --- kernel log ------------------------------------------------------------------------------


def test_real_captured_kmsg() -> None:
    text = (PLAIN / "dev/kmsg").read_text()
    log = parse_kernel_log(text)
    assert log.readable and log.user_map == () and log.problems == ()
    release = kernel_release_from_log(text)
    assert release is not None and release.startswith("6.12.") and release.endswith("+deb13-amd64")
    msgs = kmsg_messages(text)
    assert msgs[0].startswith(f"Linux version {release} ")
    assert "BIOS-e820: [mem 0x0000000100000000-0x000000023fffffff] usable" in msgs


def test_guest_md_user_map_and_probe_failures() -> None:
    """A Debian 13 guest: `dmesg | grep -E 'user:|BIOS-e820'` and the alignment-probe lines (verbatim)."""
    dmesg = """\
user: [mem 0x0000000000100000-0x000000007fffffff] usable
user: [mem 0x0000000080000000-0x000000009fffffff] persistent (type 12)
user: [mem 0x00000000a0000000-0x00000000a27fffff] usable
user: [mem 0x00000000af100000-0x00000000b2dfffff] persistent (type 12)
nd_pmem namespace0.0: unable to guarantee persistence of writes
nd_pmem namespace2.0: [mem 0xaf100000-0xb2dfffff flags 0x200] misaligned, unable to map
nd_pmem: probe of namespace2.0 failed with error -95
"""
    log = parse_kernel_log(dmesg)
    assert [(r.start, r.end, r.type) for r in log.user_map if r.type.startswith("persistent")] == [
        (0x80000000, 0xA0000000, "persistent (type 12)"), (0xAF100000, 0xB2E00000, "persistent (type 12)")]
    assert log.problems == (
        "nd_pmem namespace2.0: [mem 0xaf100000-0xb2dfffff flags 0x200] misaligned, unable to map",
        "nd_pmem: probe of namespace2.0 failed with error -95",
    )


def test_probe_failure_wording_of_kernel_6_12() -> None:
    """debian13-qemu-misaligned (real capture, kernel 6.12): the probe failure reads
    "probe with driver nd_pmem failed", not 6.1's "probe of namespaceN.0 failed"."""
    text = (FIXTURES / "debian13-qemu-misaligned" / "dev/kmsg").read_text()
    assert "nd_pmem namespace1.0: probe with driver nd_pmem failed with error -95" in parse_kernel_log(text).problems


def test_kernel_log_with_timestamps_and_kmsg_records() -> None:
    text = ("[    0.000000] user: [mem 0x0000000200000000-0x000000023fffffff] persistent (type 12)\n"
            "4,900,12345,-;.text .data .bss are not marked as E820_TYPE_RAM!\n"
            " SUBSYSTEM=platform\n")
    log = parse_kernel_log(text)
    assert log.user_map == (MemRange(0x200000000, 0x240000000, "persistent (type 12)"),)
    assert log.problems == (".text .data .bss are not marked as E820_TYPE_RAM!",)


def test_unreadable_kernel_log() -> None:
    assert parse_kernel_log(None).readable is False
    assert kernel_release_from_log(None) is None


def test_meminfo() -> None:
    total = parse_meminfo_total((PLAIN / "proc/meminfo").read_text())
    assert total is not None and 7 * GIB < total <= 8 * GIB  # a `-m 8G` guest
    assert parse_meminfo_total("") is None
    assert parse_meminfo_total("MemFree: 1 kB\n") is None


# --- mounts ----------------------------------------------------------------------------------


def test_guest_md_dax_mountinfo_lines() -> None:
    """A Debian 13 guest: `grep pmem /proc/self/mountinfo` after ext4 and xfs DAX mounts (verbatim)."""
    ext4, xfs = parse_mountinfo(
        "97 27 259:0 / /mnt rw,relatime shared:51 - ext4 /dev/pmem0 rw,dax=always\n"
        "97 27 259:0 / /mnt rw,relatime shared:51 - xfs /dev/pmem0 rw,attr2,dax=always,inode64,logbufs=8,"
        "logbsize=32k,noquota\n")
    assert (ext4.mount_point, ext4.fstype, ext4.source, ext4.device, ext4.dax) == ("/mnt", "ext4", "/dev/pmem0",
                                                                                  "259:0", True)
    assert xfs.fstype == "xfs" and xfs.dax and "attr2" in xfs.super_options


@pytest.mark.parametrize(("super_opts", "dax"), [
    ("rw,dax=always", True),
    ("rw,dax", True),  # legacy option before 5.8
    ("rw,attr2,dax=never,inode64", False),  # xfs silently turned DAX off
    ("rw,attr2,inode64", False),
    ("rw,dax=inode", False),
])
def test_mount_dax_detection(super_opts: str, dax: bool) -> None:
    (m,) = parse_mountinfo(f"97 27 259:0 / /pmem/fast rw,relatime shared:51 - xfs /dev/pmem0 {super_opts}\n")
    assert m.dax is dax


def test_real_captured_mountinfo() -> None:
    mounts = parse_mountinfo((PLAIN / "proc/self/mountinfo").read_text())
    root = next(m for m in mounts if m.mount_point == "/")
    assert (root.fstype, root.source, root.super_options) == ("ext4", "/dev/vda1", ("rw", "errors=remount-ro"))
    assert len(mounts) == len((PLAIN / "proc/self/mountinfo").read_text().splitlines())


def test_mountinfo_escapes_and_optional_fields() -> None:
    (m,) = parse_mountinfo("50 29 259:1 / /pmem/my\\040dir rw shared:1 master:2 - ext4 /dev/pmem1 rw,dax=always\n")
    assert m.mount_point == "/pmem/my dir" and m.fstype == "ext4"
    assert parse_mountinfo("garbage line\n\n") == ()


# --- signatures and sysfs --------------------------------------------------------------------


def test_blkid_export() -> None:
    text = ("DEVNAME=/dev/pmem0\nUUID=0f0c2a57-9d7e-4bd0-8d7b-3b1f3c2c1a10\nBLOCK_SIZE=4096\n"
            "TYPE=ext4\nLABEL=fast\n")
    assert parse_blkid_export(text) == (("UUID", "0f0c2a57-9d7e-4bd0-8d7b-3b1f3c2c1a10"), ("BLOCK_SIZE", "4096"),
                                        ("TYPE", "ext4"), ("LABEL", "fast"))
    assert parse_blkid_export("") == ()


def test_wipefs_json() -> None:
    text = json.dumps({"signatures": [
        {"device": "pmem0", "offset": "0x438", "type": "ext4", "uuid": "x", "label": None},
        {"device": "pmem0", "offset": "0x0", "type": "xfs", "uuid": "y", "label": None}]})
    assert parse_wipefs_json(text) == ("ext4", "xfs")
    assert parse_wipefs_json("") == ()
    assert parse_wipefs_json("  \n") == ()
    with pytest.raises(ValueError):
        parse_wipefs_json("{not json")


@pytest.mark.parametrize(("text", "value"), [
    ("0x200000000\n", 0x200000000),
    ("1073741824\n", GIB),
    ("", None),
    (None, None),
    ("unknown", None),
    ("-1", -1),
])
def test_parse_int_attr(text: str | None, value: int | None) -> None:
    assert parse_int_attr(text) == value

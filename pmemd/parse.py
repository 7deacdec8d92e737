"""Pure parsers for the host sources pmemd reads. Each takes text, returns frozen facts."""

from __future__ import annotations

import json
import re

from pmemd.facts import (
    Cmdline,
    IomemEntry,
    KernelLog,
    MemmapEntry,
    MemmapKind,
    MemRange,
    MountEntry,
)
from pmemd.units import memparse

# --- kernel command line -------------------------------------------------------------------


def split_cmdline(text: str) -> tuple[str, ...]:
    """Split like the kernel's ``next_arg()``: whitespace separates, double quotes group."""
    tokens: list[str] = []
    cur: list[str] = []
    in_quote = False
    have = False
    for ch in text.strip():
        if ch == '"':
            in_quote = not in_quote
            have = True
            continue
        if ch.isspace() and not in_quote:
            if have:
                tokens.append("".join(cur))
                cur, have = [], False
            continue
        cur.append(ch)
        have = True
    if have:
        tokens.append("".join(cur))
    return tuple(tokens)


_ACTIONS = {"@": MemmapKind.RAM, "#": MemmapKind.ACPI, "$": MemmapKind.RESERVED,
            "!": MemmapKind.PRAM, "%": MemmapKind.CONVERT}


def parse_memmap_value(value: str, token: str) -> tuple[MemmapEntry, ...]:
    """One ``memmap=`` value with the semantics of ``parse_memmap_one()`` in arch/x86/kernel/e820.c."""
    entries: list[MemmapEntry] = []
    for piece in value.split(","):
        if piece.startswith("exactmap"):
            entries.append(MemmapEntry(MemmapKind.EXACTMAP, 0, None, piece, token))
            continue
        size, rest = memparse(piece)
        if rest == piece:  # no number consumed: the kernel returns -EINVAL and ignores it
            entries.append(MemmapEntry(MemmapKind.IGNORED, 0, None, piece, token))
            continue
        kind = _ACTIONS.get(rest[:1], MemmapKind.LIMIT)
        start: int | None = None
        if kind is not MemmapKind.LIMIT:
            start, _ = memparse(rest[1:])
        entries.append(MemmapEntry(kind, size, start, piece, token))
    return tuple(entries)


def parse_cmdline(text: str) -> Cmdline:
    tokens = split_cmdline(text)
    memmap: list[MemmapEntry] = []
    limits: list[str] = []
    crash: tuple[int, int | None] | None = None
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if key == "memmap" and eq:
            entries = parse_memmap_value(value, tok)
            memmap.extend(entries)
            if any(e.kind in (MemmapKind.LIMIT, MemmapKind.EXACTMAP) for e in entries):
                limits.append(tok)
        elif key == "mem" and eq:
            limits.append(tok)
        elif key == "crashkernel" and eq and "," not in value.split("@")[0] and ":" not in value:
            size, rest = memparse(value)
            start = memparse(rest[1:])[0] if rest.startswith("@") else None
            crash = (size, start)
    return Cmdline(tokens, tuple(memmap), tuple(limits), crash)


# --- memory maps ---------------------------------------------------------------------------


CORRUPT = "corrupt: "  # type prefix of a firmware map entry that could not be read (see validate)
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]{1,16}")


def parse_firmware_entry(start: str, end: str, type_: str, *, source: str = "/sys/firmware/memmap") -> MemRange:
    """One /sys/firmware/memmap/N entry; ``end`` there is inclusive.

    A file that is not a 64-bit hex number, or an end below the start, gives an empty range
    whose type starts with ``CORRUPT`` and says what is wrong with which file (``source``: the
    entry's directory): validation then refuses to judge any range against the map, instead
    of drawing conclusions from a damaged one.
    """
    s, e, t = start.strip(), end.strip(), type_.strip()
    for label, text in (("start", s), ("end", e)):
        if not _HEX.fullmatch(text):
            return MemRange(0, 0, f"{CORRUPT}{source}/{label} is not a 64-bit hex address "
                            f"({_token(text)})")
    lo, hi = int(s, 16), int(e, 16) + 1
    if hi <= lo:
        return MemRange(0, 0, f"{CORRUPT}{source}: end {e} lies below start {s}")
    if not t.isprintable() or len(t) > 64:
        return MemRange(0, 0, f"{CORRUPT}{source}/type is not a memory type name ({_token(t)})")
    return MemRange(lo, hi, t)


def _token(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


_IOMEM = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    """Top-level /proc/iomem resources with the names of their direct children."""
    tops: list[tuple[int, int, str, list[str]]] = []
    for line in text.splitlines():
        m = _IOMEM.match(line)
        if not m:
            continue
        start, end = int(m.group("start"), 16), int(m.group("end"), 16) + 1
        if m.group("indent") == "":
            tops.append((start, end, m.group("name").strip(), []))
        elif len(m.group("indent")) == 2 and tops:
            tops[-1][3].append(m.group("name").strip())
    return tuple(IomemEntry(s, e, n, tuple(c)) for s, e, n, c in tops)


_USER = re.compile(r"user: \[mem 0x(?P<start>[0-9a-f]+)-0x(?P<end>[0-9a-f]+)\] (?P<type>.+)$")
_PROBLEMS = re.compile("|".join(f"(?:{p})" for p in (  # one search per message
    r"\.text \.data \.bss are not marked as E820_TYPE_RAM",
    r"misaligned, unable to map",
    r"probe of (namespace|pfn|dax|btt)\S* failed with error",  # 6.1
    r"(namespace|pfn|dax|btt)\S*: probe with driver \S+ failed with error",  # 6.12 (captured)
    r"attempted on (mixed|ram) region",
    r"Misaligned __add_pages",
    r"e820: too many entries",
    r"Conflicting mapping in same section",
    r"DAX unsupported by block device",
)))


def kmsg_messages(text: str) -> list[str]:
    """Message texts from /dev/kmsg records ("pri,seq,usec,flags;text") or dmesg lines."""
    out: list[str] = []
    for line in text.splitlines():
        if not line or line.startswith(" "):
            continue  # kmsg dictionary continuation lines
        head, sep, msg = line.partition(";")
        if sep and re.fullmatch(r"\d+,\d+,\d+,[^;]*", head):
            out.append(msg)
        else:
            out.append(re.sub(r"^\[\s*\d+\.\d+\]\s?", "", line))
    return out


def parse_kernel_log(text: str | None) -> KernelLog:
    if text is None:
        return KernelLog()
    user: list[MemRange] = []
    problems: list[str] = []
    for msg in kmsg_messages(text):
        m = _USER.search(msg)
        if m:
            user.append(MemRange(int(m.group("start"), 16), int(m.group("end"), 16) + 1,
                                 m.group("type").strip()))
            continue
        if _PROBLEMS.search(msg):
            problems.append(msg.strip())
    return KernelLog(tuple(user), tuple(problems), True)


def kernel_release_from_log(text: str | None) -> str | None:
    if not text:
        return None
    m = re.search(r"Linux version (\S+)", text)
    return m.group(1) if m else None


def parse_meminfo_total(text: str | None) -> int | None:
    if not text:
        return None
    m = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


# --- mounts --------------------------------------------------------------------------------


def unescape_mount_field(field: str) -> str:
    """Undo the octal escapes (``\\040`` for a space) of a mountinfo field."""
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """/proc/self/mountinfo (see proc(5)); optional fields end at the "-" separator."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10:
            continue
        sep = 6
        while sep < len(fields) and fields[sep] != "-":
            sep += 1
        if len(fields) < sep + 4 or not fields[0].isdigit() or len(fields[0]) > 20:
            continue  # not a mountinfo line (a damaged file): skipped like a short line
        out.append(MountEntry(
            mount_id=int(fields[0]),
            device=fields[2],
            root=unescape_mount_field(fields[3]),
            mount_point=unescape_mount_field(fields[4]),
            options=tuple(fields[5].split(",")),
            fstype=fields[sep + 1],
            source=unescape_mount_field(fields[sep + 2]),
            super_options=tuple(fields[sep + 3].split(",")),
        ))
    return tuple(out)


# --- signatures ----------------------------------------------------------------------------


def parse_blkid_export(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key and key != "DEVNAME":
            pairs.append((key, value))
    return tuple(pairs)


def parse_wipefs_json(text: str) -> tuple[str, ...]:
    """Signature types from ``wipefs --json``; an empty output means no signatures."""
    if not text.strip():
        return ()
    data = json.loads(text)
    return tuple(str(s.get("type", "?")) for s in data.get("signatures", []))


# --- sizes in sysfs ------------------------------------------------------------------------


def parse_int_attr(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None

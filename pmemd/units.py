"""Sizes and addresses: the config's strict syntax, the kernel's lenient one, and rendering.

The config syntax is deliberately narrower than the kernel's ``memparse()``: every value the
config accepts means the same thing to a person and to the kernel, and anything the kernel would
read differently (``010G`` is octal there, ``4GB`` turns ``memmap=`` into a memory limit) is an
error that says what to write instead.
"""

from __future__ import annotations

import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

_SUFFIX = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}
_KERNEL_SUFFIX = {"K": KIB, "M": MIB, "G": GIB, "T": TIB, "P": 1024 * TIB, "E": 1024 * 1024 * TIB}


MAX_BYTES = (1 << 64) - 1  # the kernel's memparse() and e820 hold 64-bit addresses and sizes


class SizeError(ValueError):
    """A size or address the config must not accept; the message says what to write."""


def token(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message quotes the offending token, never
    a whole line of a file (a drop-in can be a link to any file on the host)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _checked(value: int, text: object) -> int:
    if value > MAX_BYTES:
        raise SizeError(f"{token(text)} is more than 16E (2^64 - 1 bytes), beyond any address "
                        "the kernel can hold; write the size of real memory, e.g. 4G")
    return value


_CONFIG_SIZE = re.compile(r"(?P<num>0|[1-9][0-9]*|0[xX][0-9a-fA-F]+)(?P<suf>[KMGT]?)")


def parse_size(value: object) -> int:
    """Parse a config size/address: an int (bytes) or ``<decimal|0xhex>[K|M|G|T]`` (binary)."""
    if isinstance(value, bool):
        raise SizeError(f"expected a size such as 4G or 1073741824, got the boolean {value}")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(f"{token(value)} is negative; sizes and offsets are byte counts ≥ 0")
        return _checked(value, value)
    if not isinstance(value, str):
        raise SizeError(f"expected a size such as 4G or 1073741824, got {type(value).__name__}")
    text = value.strip()
    m = _CONFIG_SIZE.fullmatch(text)
    if m:
        num, suf = m.group("num"), m.group("suf")
        if len(num) > 40:  # int() refuses 4,300 digits; 2^64 has 20
            return _checked(MAX_BYTES + 1, text)
        base = int(num, 16) if num[:2] in ("0x", "0X") else int(num, 10)
        return _checked(base * _SUFFIX[suf], text)
    return _explain_bad_size(text)


def _explain_bad_size(text: str) -> int:
    if len(text) > 40:
        raise SizeError(f"{token(text)} is not a size; write a number of bytes or a number with "
                        "one suffix K/M/G/T (binary), e.g. 4G or 12G")
    if not text:
        raise SizeError("empty size; write a number with an optional K/M/G/T suffix, e.g. 4G")
    if text.startswith("-"):
        raise SizeError(f"{text!r} is negative; sizes and offsets are byte counts ≥ 0")
    if re.fullmatch(r"0[xX]", text) or re.fullmatch(r"0[xX][KMGT]", text):
        raise SizeError(f"{text!r} has no digits after 0x; write e.g. 0x100000000 or 4G")
    m = re.fullmatch(r"0([0-9]+)([KMGT]?)", text)
    if m:
        raise SizeError(
            f"{text!r} has a leading zero, which the kernel reads as octal "
            f"({text} = {int(m.group(1), 8)}{m.group(2)} there); write {int(m.group(1))}{m.group(2)}"
        )
    m = re.fullmatch(r"([0-9]+|0[xX][0-9a-fA-F]+)\s*([kmgtKMGT])(i?[bB])", text)
    if m:
        raise SizeError(
            f"{text!r}: the kernel takes one letter, {m.group(2).upper()}, with no "
            f"'{m.group(3)}' (memmap={text}!... would become a memory limit); "
            f"write {m.group(1)}{m.group(2).upper()}"
        )
    m = re.fullmatch(r"([0-9]+)([kmgt])", text)
    if m:
        raise SizeError(f"{text!r}: write the suffix in upper case, {m.group(1)}{m.group(2).upper()}")
    if re.fullmatch(r"[0-9]+\.[0-9]+[KMGT]?", text):
        raise SizeError(f"{text!r}: fractions are not allowed; use a smaller unit, e.g. 1536M")
    raise SizeError(
        f"{text!r} is not a size; write a number of bytes or a number with one suffix "
        "K/M/G/T (binary), e.g. 4G or 12G"
    )


def render(value: int) -> str:
    """Canonical kernel spelling: the largest binary suffix that divides exactly, else hex bytes.

    Never a leading zero, never a ``B``: what the kernel's ``memparse()`` reads back unchanged.
    """
    if value < 0:
        raise ValueError("negative size")
    if value == 0:
        return "0"
    for suf in ("T", "G", "M", "K"):
        unit = _SUFFIX[suf]
        if value % unit == 0:
            return f"{value // unit}{suf}"
    return f"{value:#x}"


def human(value: int) -> str:
    """Human-friendly size for messages (same as render, but bytes print as bytes)."""
    for suf in ("T", "G", "M"):
        unit = _SUFFIX[suf]
        if value >= unit and value % unit == 0:
            return f"{value // unit} {suf}iB"
    if value >= GIB:
        return f"{value / GIB:.2f} GiB"
    if value >= MIB:
        return f"{value / MIB:.1f} MiB"
    return f"{value} bytes"


def memparse(text: str) -> tuple[int, str]:
    """The kernel's ``memparse()``: ``simple_strtoull(s, &end, 0)`` plus one optional suffix.

    Returns (value, rest). Base 0 means ``0x`` is hex and a leading ``0`` is octal. Like the
    kernel, an unparsable number yields 0 and consumes nothing.
    """
    i = 0
    n = len(text)
    if text[:2] in ("0x", "0X") and n > 2 and text[2] in "0123456789abcdefABCDEF":
        base, i = 16, 2
        digits = "0123456789abcdefABCDEF"
    elif text[:1] == "0":
        base, i = 8, 1
        digits = "01234567"
    else:
        base, i = 10, 0
        digits = "0123456789"
    start = i
    while i < n and text[i] in digits:
        i += 1
    value = int(text[start:i], base) if i > start else 0
    if base == 8 and i == start:
        value = 0  # a lone "0"
    value &= (1 << 64) - 1
    if i < n and text[i].upper() in _KERNEL_SUFFIX:
        value = (value * _KERNEL_SUFFIX[text[i].upper()]) & ((1 << 64) - 1)
        i += 1
    return value, text[i:]


# systemd.time(7) time spans: "1h 30min", "2min30s", "1.5h", "500ms"; a bare number is seconds.
_TIMESPAN_UNITS: dict[str, float] = {
    **dict.fromkeys(("usec", "us", "µs", "μs"), 1e-6),
    **dict.fromkeys(("msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "sec", "s", ""), 1.0),
    **dict.fromkeys(("minutes", "minute", "min", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hr", "h"), 3600.0),
    **dict.fromkeys(("days", "day", "d"), 86400.0),
    **dict.fromkeys(("weeks", "week", "w"), 7 * 86400.0),
    **dict.fromkeys(("months", "month", "M"), 30.44 * 86400),
    **dict.fromkeys(("years", "year", "y"), 365.25 * 86400),
}
_UNIT_WORDS = "|".join(sorted((re.escape(u) for u in _TIMESPAN_UNITS if u), key=len, reverse=True))
_TIMESPAN_PART = re.compile(rf"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*({_UNIT_WORDS})?(?![A-Za-zµμ])")
TIMESPAN_PATTERN = rf"^\s*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*({_UNIT_WORDS})?(?![A-Za-zµμ])\s*)+$"
MAX_DURATION = 366 * 86400  # a resync once a year is "never"; more is a typo


def parse_timespan(text: str) -> float:
    """Seconds in a systemd time span (``1h30m``, ``2min 30s``, ``500ms``); ValueError otherwise."""
    pos, total, parts = 0, 0.0, 0
    text = text.strip()
    while pos < len(text):
        m = _TIMESPAN_PART.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(text)
        if m.group(2) is None and m.end() < len(text) and not text[m.end()].isspace():
            raise ValueError(text)  # "1.5.5s": a number without a unit runs into the next one
        total += float(m.group(1)) * _TIMESPAN_UNITS[m.group(2) or ""]
        pos, parts = m.end(), parts + 1
    if not parts:
        raise ValueError(text)
    return total

"""Tier 1: sizes and addresses: the strict config syntax, the kernel's memparse(), rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmemd.units import GIB, KIB, MIB, TIB, SizeError, human, memparse, parse_size, render

# --- parse_size: what the config accepts ----------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0),
    (4096, 4096),
    (1073741824, GIB),
    ("4G", 4 * GIB),
    ("12G", 12 * GIB),
    ("128M", 128 * MIB),
    ("64K", 64 * KIB),
    ("1T", TIB),
    ("0x100000000", 4 * GIB),
    ("0X100000000", 4 * GIB),
    ("0x1G", GIB),
    ("0", 0),
    ("1073741824", GIB),
    (" 4G ", 4 * GIB),
])
def test_parse_size_accepts(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(("value", "fragments"), [
    # "B" after the suffix turns memmap= into a memory limit in the kernel.
    ("4GB", ["one letter, G", "memory limit", "write 4G"]),
    ("4gb", ["one letter, G", "write 4G"]),
    ("4GiB", ["one letter, G", "write 4G"]),
    ("512MB", ["write 512M"]),
    # A leading zero is octal in the kernel: 010G is 8 GiB there.
    ("010G", ["leading zero", "octal", "010G = 8G", "write 10G"]),
    ("0755", ["leading zero", "octal", "write 755"]),
    ("0x", ["no digits after 0x"]),
    ("0xG", ["no digits after 0x"]),
    ("-1", ["negative"]),
    ("-4G", ["negative"]),
    ("1.5G", ["fractions are not allowed", "1536M"]),
    ("4g", ["upper case", "4G"]),
    ("", ["empty size"]),
    ("lots", ["not a size", "K/M/G/T"]),
    ("4P", ["not a size"]),  # the config stops at T; the kernel would take P
    ("4 G", ["not a size"]),
])
def test_parse_size_rejects_with_a_message_that_says_what_to_write(value: str, fragments: list[str]) -> None:
    with pytest.raises(SizeError) as exc:
        parse_size(value)
    for frag in fragments:
        assert frag in str(exc.value), (value, str(exc.value))


@pytest.mark.parametrize("value", [True, False])
def test_parse_size_rejects_booleans(value: bool) -> None:
    with pytest.raises(SizeError, match="boolean"):
        parse_size(value)


@pytest.mark.parametrize("value", [-1, -4096])
def test_parse_size_rejects_negative_ints(value: int) -> None:
    with pytest.raises(SizeError, match="negative"):
        parse_size(value)


@pytest.mark.parametrize("value", [1.5, 4.0, None, [4], {"size": 4}])
def test_parse_size_rejects_other_types(value: object) -> None:
    with pytest.raises(SizeError, match="expected a size"):
        parse_size(value)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "K", "M", "G", "T"]))
def test_parse_size_means_what_the_kernel_reads(number: int, suffix: str) -> None:
    """Every string the config accepts is read identically by the kernel's memparse()."""
    text = f"{number}{suffix}"
    if number * _MULT[suffix] >= 2**64:  # the kernel would wrap it: refused instead
        with pytest.raises(SizeError, match=r"more than 16E \(2\^64 - 1 bytes\)"):
            parse_size(text)
        return
    assert memparse(text) == (parse_size(text), "")


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from(["", "K", "M", "G", "T"]))
def test_parse_size_hex_means_what_the_kernel_reads(number: int, suffix: str) -> None:
    text = f"{number:#x}{suffix}"
    if number * _MULT[suffix] >= 2**64:
        with pytest.raises(SizeError, match="more than 16E"):
            parse_size(text)
        return
    assert memparse(text) == (parse_size(text), "")


_MULT = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}


# --- render: the canonical kernel spelling --------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"),
    (4 * GIB, "4G"),
    (12 * GIB, "12G"),
    (1536 * MIB, "1536M"),
    (128 * MIB, "128M"),
    (4 * KIB, "4K"),
    (TIB, "1T"),
    (1024 * TIB, "1024T"),  # never P/E: the config cannot parse them back
    (100, "0x64"),
    (1, "0x1"),
])
def test_render(value: int, text: str) -> None:
    assert render(value) == text


def test_render_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        render(-1)


@given(st.integers(min_value=0, max_value=2**50 // 4096).map(lambda n: n * 4096))
def test_render_round_trips_through_memparse_for_4k_multiples(value: int) -> None:
    text = render(value)
    assert memparse(text) == (value, "")
    assert not text.startswith("0") or text == "0" or text.startswith("0x")
    assert "B" not in text and "b" not in text.removeprefix("0x")


@given(st.integers(min_value=0, max_value=2**60))
def test_render_round_trips_for_any_value(value: int) -> None:
    text = render(value)
    assert memparse(text) == (value, "")
    assert parse_size(text) == value  # and the config reads it back too


@given(st.integers(min_value=0, max_value=2**50))
def test_render_then_separator_leaves_the_separator(value: int) -> None:
    """What memmap= needs: after the size, the very next character is the action."""
    assert memparse(render(value) + "!12G") == (value, "!12G")


# --- memparse: the kernel's lenient parser ---------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("4G", (4 * GIB, "")),
    ("4g", (4 * GIB, "")),
    ("4k", (4 * KIB, "")),
    ("4K", (4 * KIB, "")),
    ("2m", (2 * MIB, "")),
    ("1t", (TIB, "")),
    ("1P", (1024 * TIB, "")),
    ("1p", (1024 * TIB, "")),
    ("1E", (1024 * 1024 * TIB, "")),
    ("1e", (1024 * 1024 * TIB, "")),
    ("0x10", (16, "")),
    ("0X10", (16, "")),
    ("0x1G", (GIB, "")),
    ("0xfG", (15 * GIB, "")),
    ("010", (8, "")),  # octal
    ("010G", (8 * GIB, "")),
    ("0", (0, "")),
    ("08", (0, "8")),  # '8' is not an octal digit: the number ends after the 0
    ("0x", (0, "x")),  # no hex digit after 0x: base 8, "0" then stop
    ("0xg", (0, "xg")),
    ("12G!4G", (12 * GIB, "!4G")),
    ("4GB!12G", (4 * GIB, "B!12G")),  # only one suffix: the B is left over
    ("4G$12G", (4 * GIB, "$12G")),
    ("", (0, "")),
    ("abc", (0, "abc")),  # no digits: 0, nothing consumed
    ("!12G", (0, "!12G")),
    ("G", (0, "")),  # memparse() consumes a suffix even after no digits (switch on *endptr)
    ("G!12G", (0, "!12G")),
    ("18446744073709551616", (0, "")),  # 2**64 wraps like unsigned long long
    ("16E", (0, "")),  # 16 << 60 wraps to 0
])
def test_memparse_kernel_semantics(text: str, expected: tuple[int, str]) -> None:
    assert memparse(text) == expected


@given(st.text(alphabet="0123456789abcdefxXKMGTPEkmgtpe!@#$%,", max_size=24))
def test_memparse_never_crashes_and_consumes_a_prefix(text: str) -> None:
    value, rest = memparse(text)
    assert 0 <= value < 2**64
    assert text.endswith(rest)
    if rest == text:
        assert value == 0  # nothing consumed means 0, as in the kernel


# --- human -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (4 * GIB, "4 GiB"),
    (512 * MIB, "512 MiB"),
    (TIB, "1 TiB"),
    (GIB + 1, "1.00 GiB"),
    (MIB + MIB // 2, "1.5 MiB"),
    (100, "100 bytes"),
])
def test_human(value: int, text: str) -> None:
    assert human(value) == text

"""Hypothesis strategies for card numbers (PANs) in every spelling, and for ids that are not.

Shared by the wire, gateway and edge tests that prove no card number gets
through, whatever the field and however it is written.
"""

from __future__ import annotations

from hypothesis import strategies as st

from wire.pci import BRANDS, luhn_valid


def _with_check_digit(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_valid(partial + d))


@st.composite
def pans(draw: st.DrawFn) -> str:
    """A Luhn-valid card number of some brand, at one of that brand's lengths."""
    brand = draw(st.sampled_from(BRANDS))
    width = len(brand.first_iin)
    iin = str(draw(st.integers(int(brand.first_iin), int(brand.last_iin)))).zfill(width)
    length = draw(st.sampled_from(brand.lengths))
    body = draw(st.text("0123456789", min_size=length - width - 1, max_size=length - width - 1))
    return _with_check_digit(iin + body)


SEPARATORS = " -._:+/|,;#*\t\u00a0\u2013"
FULL_WIDTH = str.maketrans("0123456789", "".join(map(chr, range(0xFF10, 0xFF1A))))
ARABIC_INDIC = str.maketrans("0123456789", "".join(map(chr, range(0x0660, 0x066A))))


@st.composite
def spelled(draw: st.DrawFn, pan: str) -> str:
    """``pan`` as text someone might write: grouped with one separator, folded, escaped."""
    style = draw(st.sampled_from(["plain", "grouped", "full-width", "arabic", "mixed-groups"]))
    if style == "grouped":
        sep = draw(st.sampled_from(SEPARATORS))
        return sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    if style == "mixed-groups":  # groups of 1-5 digits, a different separator each time
        out, i = [], 0
        while i < len(pan):
            size = draw(st.integers(1, 5))
            out.append(pan[i : i + size])
            i += size
        return "".join(
            part + (draw(st.sampled_from(SEPARATORS)) if n < len(out) - 1 else "")
            for n, part in enumerate(out)
        )
    if style == "full-width":
        return pan.translate(FULL_WIDTH)
    if style == "arabic":
        return pan.translate(ARABIC_INDIC)
    return pan


def json_escaped(text: str) -> str:
    """``text`` as raw JSON string content with every character as a \\uXXXX escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


# Ids and numbers that must pass: ids whose every digit run starts with a digit no
# card brand uses (0, 1, 7, 8, 9), ids of at most 11 digits, today's ns timestamps.
safe_numeric_ids = st.from_regex(r"\A[01789][0-9]{12,18}\Z")
short_ids = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.:-]{0,20}\Z").filter(
    lambda s: sum(c.isdigit() for c in s) <= 11
)

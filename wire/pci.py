"""Card-data guard: no primary account number (PAN) ever leaves a terminal.

Cards are identified by a keyed hash token (`card_token`). Anything that may
hold a PAN is scanned with this module's one definition of "a card number",
the one PCI data-discovery scanners use:

* a chain of digit groups joined by separators of 1-3 characters that are
  neither digits nor ASCII letters (space, ``-``, ``.``, ``_``, ``:``, ``+``,
  ``/``, ``*``, a no-break space, " - ", ", ", the ``","`` of a JSON array of
  groups...), so "4111.1111.1111.1111" and "qty 2 4111 1111 1111 1111" are
  found; a longer run of such characters, or a letter, ends a chain (a letter
  ends a number in ids: UUIDs and hex ids are not read as card numbers);
* candidates are the whole chain, each group, and each run of consecutive
  groups of at most `PRINTED_GROUP_MAX` digits (as card faces print them); a
  candidate is a PAN if its prefix lies in a card brand's IIN range, its
  length is one that brand issues (`BRANDS`), and it passes the Luhn check. A
  17-digit id starting with 1 is not a card number; a 16-digit one starting
  with 4 that passes Luhn is a Visa number, whatever the sender meant.
* before the scan, text is normalised: JSON escapes are decoded
  (``\\u0034`` is "4"), NFKC folds compatibility characters (full-width
  digits, circled digits, ...) and every other Unicode decimal digit counts as
  its ASCII digit.

Bounded work: a chain longer than `MAX_CHAIN_CHARS`, or an unbroken run of more
than 19 digits, is refused outright without looking inside: it can hide a PAN
anywhere, checking every window of an unbounded chain costs time an attacker
chooses, and no string a tillpulse message carries legitimately holds one (ids
are at most 64 characters). So each chain costs at most 7 Luhn checks per group.

`contains_pan` scans text, `payload_contains_pan` the raw bytes of a payload
before anything is decoded, kept or written (invalid UTF-8 tolerated; a bare
19-digit JSON integer under the key ``ts`` is a nanosecond event time and is
left out), `mask_pans` replaces what is found (log lines).

Cost: a gateway scans every message, and the regular-expression scan of a
typical 400-byte payload costs more than decoding it. Most payloads are ASCII
without a backslash (nothing to normalise) and hold no 12 digits that only
separators divide, so `payload_contains_pan` first proves that with a few
byte operations (`_has_no_chain`, a third of the scan's cost) and runs the
full scan only on the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from typing import Final, NamedTuple

import msgspec

PAN_MIN_DIGITS: Final = 12  # Maestro
PAN_MAX_DIGITS: Final = 19
PRINTED_GROUP_MAX: Final = 6  # the longest digit group a card face prints
MAX_SEPARATOR_CHARS: Final = 3  # "4111 - 1111", '4111", "1111' (a JSON array of groups)
# A 19-digit PAN with a 3-character separator between every two digits takes 73.
MAX_CHAIN_CHARS: Final = 4 * PAN_MAX_DIGITS
TOKEN_PREFIX: Final = "ct1_"
# 128 bits of HMAC-SHA256, base64url without padding: 22 characters.
TOKEN_PATTERN: Final = r"\Act1_[A-Za-z0-9_-]{22}\Z"
MASK: Final = "[card number masked]"


class Brand(NamedTuple):
    name: str
    first_iin: str  # inclusive range of prefixes of equal length
    last_iin: str
    lengths: tuple[int, ...]


_CARD = (16, 19)  # what the networks issue beyond the classic length, both ISO-permitted
# Source: Wikipedia, "Payment card number", table "Issuer identification number
# (IIN)" (ISO/IEC 7812 ranges as the networks publish them), plus the legacy ranges
# that scheme and gateway test-card lists still use (Diners Club 300-305 and 38-39,
# JCB's 15-digit 1800/2100/2131, Maestro 56-58). Lengths are those the networks
# issue: the 17- and 18-digit lengths that ISO permits for UnionPay, Discover, JCB,
# Diners and Mir are left out (no such cards are issued; keeping them would refuse
# 0.5% of random 17-digit ids), except under Maestro's own ranges.
# Discover's 622126-622925 lies inside UnionPay's 62 with the same lengths.
BRANDS: Final = (
    Brand("Visa", "4", "4", (13, 16, 19)),
    Brand("Mastercard", "51", "55", (16,)),
    Brand("Mastercard", "2221", "2720", (16,)),
    Brand("American Express", "34", "34", (15,)),
    Brand("American Express", "37", "37", (15,)),
    Brand("Discover", "6011", "6011", _CARD),
    Brand("Discover", "644", "649", _CARD),
    Brand("Discover", "65", "65", _CARD),
    Brand("JCB", "3528", "3589", _CARD),
    *(Brand("JCB", iin, iin, (15,)) for iin in ("1800", "2100", "2131")),
    Brand("Diners Club", "300", "305", (14, 16, 19)),
    Brand("Diners Club", "36", "36", (14, 16, 19)),
    Brand("Diners Club", "38", "39", (14, 16, 19)),
    Brand("UnionPay", "62", "62", _CARD),
    Brand("Mir", "2200", "2204", _CARD),
    *(
        Brand("Maestro", iin, iin, tuple(range(12, 20)))
        for iin in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763")
    ),
    Brand("Maestro", "56", "58", (12, 16, 19)),
)
_IIN_DIGITS: Final = 4  # every range above is decided by the first 4 digits


def _lengths_by_iin(brands: tuple[Brand, ...]) -> dict[str, frozenset[int]]:
    """First 4 digits -> the PAN lengths some brand issues under them."""
    table: dict[str, set[int]] = {}
    for brand in brands:
        widen = _IIN_DIGITS - len(brand.first_iin)
        low = int(brand.first_iin) * 10**widen
        high = (int(brand.last_iin) + 1) * 10**widen
        for iin in range(low, high):
            table.setdefault(f"{iin:04d}", set()).update(brand.lengths)
    # Thousands of prefixes share a handful of length sets: one object each (~0.8 MiB less
    # on a Pi than a frozenset per prefix).
    shared: dict[frozenset[int], frozenset[int]] = {}
    return {
        iin: shared.setdefault(frozenset(lengths), frozenset(lengths))
        for iin, lengths in table.items()
    }


_LENGTHS_BY_IIN: Final = _lengths_by_iin(BRANDS)

# A digit, then 11+ more, each after at most MAX_SEPARATOR_CHARS characters that are neither
# digits nor ASCII letters: a chain that may hold a PAN.
# Possessive: a chain never gives back what it matched (no backtracking, ~25% faster).
_CHAIN: Final = re.compile(
    rf"[0-9](?:[^0-9A-Za-z]{{0,{MAX_SEPARATOR_CHARS}}}+[0-9]){{{PAN_MIN_DIGITS - 1},}}+"
)
_NON_DIGITS: Final = re.compile(r"[^0-9]+")
# Text units for normalisation: plain ASCII runs, JSON escapes, non-ASCII runs, the rest.
_UNIT: Final = re.compile(
    r'(?P<ascii>[\x00-\x5b\x5d-\x7f]+)|\\u(?P<hex>[0-9a-fA-F]{4})|\\(?P<esc>["\\/bfnrt])'
    r"|(?P<other>[^\x00-\x7f]+)|\\",
)
# A decoded or folded quote becomes ' (also a non-digit): only a raw quote can
# open the ``"ts":`` key that payload_contains_pan leaves out.
_JSON_ESCAPES: Final = {'"': "'", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# A decimal digit other than 0-9 (NFKC leaves e.g. Arabic-Indic digits as they are).
_OTHER_DIGIT: Final = re.compile(r"(?![0-9])\d")
_TS_KEY: Final = re.compile(r'"ts"\s*:\s*\Z')
# In valid JSON, outside strings, a "." or an exponent after a digit belongs to a number.
_FRACTION_OR_STRING: Final = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?<=[0-9])(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)'
)
_SEPARATORS: Final = str.maketrans("", "", " -")
# For _has_no_chain: every ASCII digit as "0", every ASCII character that is neither digit
# nor letter (a separator) dropped.
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"0123456789", b"0" * 10)
_ASCII_SEPARATORS: Final = bytes(c for c in range(128) if not chr(c).isalnum())
_SHORTEST_CHAIN: Final = b"0" * PAN_MIN_DIGITS
_COMPACT_TS_KEY: Final = b'"ts":'


def luhn_valid(digits: str) -> bool:
    """True if the decimal string passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def is_pan(digits: str) -> bool:
    """True if ``digits`` (ASCII) is a card number: brand prefix and length, and Luhn."""
    lengths = _LENGTHS_BY_IIN.get(digits[:_IIN_DIGITS])
    return lengths is not None and len(digits) in lengths and luhn_valid(digits)


def contains_pan(text: str) -> bool:
    """True if ``text`` holds a card number in any spelling (see the module docstring)."""
    normalised = _normalised(text)
    return any(_chain_holds_pan(chain.group()) for chain in _CHAIN.finditer(normalised))


def payload_contains_pan(data: bytes) -> bool:
    """True if raw payload bytes hold a card number, as text or as a bare JSON number.

    Runs before anything is decoded, kept or written. A bare JSON number counts
    by its integer part: every 12-19 digit integer is checked like a string,
    except a 19-digit one right after a ``"ts":`` key (an event time in
    nanoseconds, 2001-2286). The digits after a number's decimal point (a
    measurement's precision, "41.23456789012345") are left out when the payload
    is valid JSON, where they cannot be told from string content otherwise.
    """
    return not _has_no_chain(data) and _scan_payload(data)


def _scan_payload(data: bytes) -> bool:
    """`payload_contains_pan` without the shortcut."""
    text = data.decode("utf-8", "replace")
    if not _holds_pan(_normalised(text)):
        return False
    if not _is_json(data):
        return True
    return _holds_pan(_normalised(_FRACTION_OR_STRING.sub(_drop_fraction, text)))


def _has_no_chain(data: bytes) -> bool:
    """True if ``data`` provably holds no chain (a ``"ts":`` value aside); False if unsure.

    Only for ASCII without a backslash, which normalising leaves as it is. There a chain
    is digits and separators without a letter, so dropping the separators turns it into
    12 or more digits in a row: none in a row means no chain. The first compact
    ``"ts":`` value is left out first when the scan would leave it out too (19 digits
    that its chain ends with); its neighbours are a letter and a chain's end, so taking
    it out joins no digits.
    """
    if not data.isascii() or b"\\" in data:
        return False
    key = data.find(_COMPACT_TS_KEY)
    if key >= 0:
        start = key + len(_COMPACT_TS_KEY)
        end = start + PAN_MAX_DIGITS
        digits = data[start:end]
        # The chain goes on if a digit follows within MAX_SEPARATOR_CHARS separators.
        after = data[end : end + MAX_SEPARATOR_CHARS + 1].translate(None, _ASCII_SEPARATORS)
        if len(digits) == PAN_MAX_DIGITS and digits.isdigit() and not after[:1].isdigit():
            data = data[:start] + data[end:]
    return _SHORTEST_CHAIN not in data.translate(_DIGITS_AS_ZERO, _ASCII_SEPARATORS)


def _holds_pan(normalised: str) -> bool:
    for chain in _CHAIN.finditer(normalised):
        if _is_ts_value(normalised, chain):
            continue
        if _chain_holds_pan(chain.group()):
            return True
    return False


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):  # msgspec's own depth guard
        return False
    return True


def _drop_fraction(token: re.Match[str]) -> str:
    """A JSON string as it is; a number's fraction and exponent as two spaces (ends a chain)."""
    return token.group() if token.group().startswith('"') else "  "


def _is_ts_value(normalised: str, chain: re.Match[str]) -> bool:
    """True for a 19-digit integer right after a ``"ts":`` key (a nanosecond event time)."""
    digits = chain.group()
    return (
        len(digits) == PAN_MAX_DIGITS
        and digits.isdigit()
        and _TS_KEY.search(normalised, max(0, chain.start() - 16), chain.start()) is not None
    )


def mask_pans(text: str) -> str:
    """``text`` with every chain that holds a card number replaced by `MASK`."""
    if not contains_pan(text):
        return text
    pieces = _pieces(text)
    normalised = "".join(piece for piece, _, _ in pieces)
    spans: list[tuple[int, int]] = []  # where in ``text`` each normalised character comes from
    for piece, start, end in pieces:
        if len(piece) == end - start:
            spans += ((start + i, start + i + 1) for i in range(len(piece)))
        else:
            spans += [(start, end)] * len(piece)
    out: list[str] = []
    done = 0
    for chain in _CHAIN.finditer(normalised):
        if _chain_holds_pan(chain.group()):
            start = spans[chain.start()][0]
            if start >= done:  # a non-ASCII run may hold two chains: mask it once
                out += (text[done:start], MASK)
                done = spans[chain.end() - 1][1]
    return "".join(out) + text[done:] if out else text


def _chain_holds_pan(chain: str) -> bool:
    """True if the whole chain, one of its groups, or a printed-looking part of it is a PAN.

    A part of several groups counts only if every group is at most
    `PRINTED_GROUP_MAX` digits, as card faces print them (4-4-4-4, 4-6-5,
    4-6-4): "qty 2 4111 1111 1111 1111" is found, while the first two groups of
    an 8-6-3 id ("12345678-123456-123") are not a candidate of their own.
    """
    if len(chain) > MAX_CHAIN_CHARS:
        return True
    groups = _NON_DIGITS.split(chain)
    if any(len(group) > PAN_MAX_DIGITS for group in groups):
        return True
    if is_pan("".join(groups)):
        return True
    for start in range(len(groups)):
        digits = ""
        for end in range(start, len(groups)):
            group = groups[end]
            if end > start and max(len(group), len(groups[start])) > PRINTED_GROUP_MAX:
                break
            digits += group
            if len(digits) > PAN_MAX_DIGITS:
                break
            if len(digits) >= PAN_MIN_DIGITS and is_pan(digits):
                return True
    return False


def _normalised(text: str) -> str:
    if text.isascii() and "\\" not in text:
        return text  # the common case: nothing to decode or fold
    return "".join(piece for piece, _, _ in _pieces(text))


def _pieces(text: str) -> list[tuple[str, int, int]]:
    """``text`` as (normalised piece, start, end) units, in order.

    A piece may be longer or shorter than its unit (NFKC turns "⑫" into "12");
    a non-ASCII run is normalised as a whole, so its characters map to its whole span.
    """
    pieces = []
    for unit in _UNIT.finditer(text):
        kind = unit.lastgroup
        if kind == "ascii":
            piece = unit.group()
        elif kind == "hex":
            piece = _folded(chr(int(unit.group("hex"), 16)))
        elif kind == "esc":
            piece = _JSON_ESCAPES.get(unit.group("esc"), unit.group("esc"))
        elif kind == "other":
            piece = _folded(unit.group())
        else:  # a backslash that starts no escape
            piece = "\\"
        pieces.append((piece, unit.start(), unit.end()))
    return pieces


def _folded(text: str) -> str:
    """NFKC, every decimal digit as its ASCII digit, quotes as ' (see _JSON_ESCAPES)."""
    folded = unicodedata.normalize("NFKC", text).replace('"', "'")
    return _OTHER_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group())), folded)


def card_token(pan: str, key: bytes) -> str:
    """The keyed token that stands for a card everywhere past the terminal.

    Same card and key -> same token, so velocity checks work across terminals;
    without the key the token reveals nothing about the PAN.
    """
    digits = pan.translate(_SEPARATORS)
    if not digits.isdigit():
        raise ValueError("a PAN is made of digits (spaces and dashes allowed)")
    if not key:
        raise ValueError("card tokens need a non-empty key")
    mac = hmac.new(key, digits.encode("ascii"), hashlib.sha256).digest()[:16]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

"""Card-data guard: no primary account number (PAN) ever leaves a terminal.

Cards are identified by a keyed hash token (`card_token`); a payload that
contains anything shaped like a PAN is refused (`contains_pan`): a run of
13-19 digits that passes the Luhn check. Digits may be grouped by single
spaces or dashes as printed on a card ("4111 1111 1111 1111"); every run of
consecutive groups with 13-19 digits in all is checked, so a PAN next to
another number ("qty 2 4111 1111 1111 1111") is still found. An unbroken run
of more than 19 digits, or a grouped run of more than 76 characters, is
refused outright: it could hide a PAN, no field of ours holds such a number in
a string, and it bounds the work on hostile input. Tokens and ids are therefore never
long decimal numbers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

PAN_MIN_DIGITS: Final = 13
PAN_MAX_DIGITS: Final = 19
MAX_GROUPED_RUN_CHARS: Final = 4 * PAN_MAX_DIGITS  # separators included
TOKEN_PREFIX: Final = "ct1_"
# 128 bits of HMAC-SHA256, base64url without padding: 22 characters. Base64url
# makes a Luhn-valid 13-digit run inside a token astronomically unlikely (~1e-11).
TOKEN_PATTERN: Final = r"\Act1_[A-Za-z0-9_-]{22}\Z"

# A digit followed by 12+ more digits, each optionally preceded by one space or dash.
_DIGIT_RUN: Final = re.compile(r"\d(?:[ -]?\d){12,}")
_SEPARATOR: Final = re.compile(r"[ -]")
_SEPARATORS: Final = str.maketrans("", "", " -")


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


def contains_pan(text: str) -> bool:
    """True if ``text`` holds a Luhn-valid run of 13-19 digits anywhere."""
    for match in _DIGIT_RUN.finditer(text):
        groups = _SEPARATOR.split(match.group())
        if len(match.group()) > MAX_GROUPED_RUN_CHARS or any(
            len(group) > PAN_MAX_DIGITS for group in groups
        ):
            return True
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > PAN_MAX_DIGITS:
                    break
                if len(digits) >= PAN_MIN_DIGITS and luhn_valid(digits):
                    return True
    return False


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

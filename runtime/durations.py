"""Durations as people write them in config files, scenarios and command lines."""

from __future__ import annotations

import re
from typing import Final

from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_MS, NS_PER_S

_PART: Final = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
_DURATION: Final = re.compile(rf"\A(?:{_PART})+\Z")
_UNIT_NS: Final = {
    "ms": NS_PER_MS,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": NS_PER_HOUR,
    "d": NS_PER_DAY,
}


def parse_duration(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1.5h"``, ``"11h30m"``, ``"2d"``, ``"250ms"`` -> nanoseconds.

    Raises ValueError with the accepted forms on anything else.
    """
    text = text.strip()
    if _DURATION.match(text) is None:
        raise ValueError(
            f"{text!r} is not a duration: numbers with units ms s m h d (e.g. '15m', '1h30m')"
        )
    return sum(round(float(number) * _UNIT_NS[unit]) for number, unit in re.findall(_PART, text))

"""Types for argparse options: a bad value becomes argparse's one-line usage error
naming the option (`runtime.cli.Parser`), exit 2.

    parser.add_argument("--every", type=duration_s)           # "60s" -> 60.0
    parser.add_argument("--terminals", type=positive_int)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from runtime.durations import parse_duration
from wire.timestamps import NS_PER_DAY, NS_PER_S, parse_iso

# Longer is a typo ("5000000d"), and too long for a timer: threading's waits refuse it.
MAX_DURATION_DAYS = 3650


def iso_time(text: str) -> int:
    """An ISO 8601 time, in nanoseconds since the epoch."""
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_ns(text: str) -> int:
    """A positive duration (``90s``, ``5m``, ``1d``), in nanoseconds."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    if value > MAX_DURATION_DAYS * NS_PER_DAY:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than {MAX_DURATION_DAYS}d")
    return value


def duration_s(text: str) -> float:
    """A positive duration, in seconds."""
    return duration_ns(text) / NS_PER_S


def _number(text: str, cast: type[int] | type[float], minimum: float, strict: bool) -> float:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isinf(value):  # "inf" overflows the timers and counts it would feed
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    if not (value > minimum if strict else value >= minimum):  # NaN fails both
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise argparse.ArgumentTypeError(f"{text} is not {bound}")
    return value


def whole(text: str) -> int:
    """A whole number >= 0."""
    return int(_number(text, int, 0, strict=False))


def positive_int(text: str) -> int:
    """A whole number > 0."""
    return int(_number(text, int, 0, strict=True))


def at_most(maximum: int, parse: Callable[[str], int], why: str) -> Callable[[str], int]:
    """``parse``, refusing a value above ``maximum`` (``why``: the fix)::

    parser.add_argument("--terminals", type=at_most(1_000_000, positive_int, "split it"))
    """

    def bounded(text: str) -> int:
        value = parse(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is more than {maximum:,}: {why}")
        return value

    return bounded


def non_negative(text: str) -> float:
    """A number >= 0."""
    return _number(text, float, 0.0, strict=False)


def positive(text: str) -> float:
    """A number > 0."""
    return _number(text, float, 0.0, strict=True)

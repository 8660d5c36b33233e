"""Types for argparse options: a bad value becomes argparse's one-line usage error
naming the option (`runtime.cli.Parser`), exit 2.

    parser.add_argument("--every", type=duration_s)           # "60s" -> 60.0
    parser.add_argument("--terminals", type=positive_int)
"""

from __future__ import annotations

import argparse

from runtime.durations import parse_duration
from wire.timestamps import NS_PER_S, parse_iso


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
    return value


def duration_s(text: str) -> float:
    """A positive duration, in seconds."""
    return duration_ns(text) / NS_PER_S


def _number(text: str, cast: type[int] | type[float], minimum: float, strict: bool) -> float:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
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


def non_negative(text: str) -> float:
    """A number >= 0."""
    return _number(text, float, 0.0, strict=False)


def positive(text: str) -> float:
    """A number > 0."""
    return _number(text, float, 0.0, strict=True)

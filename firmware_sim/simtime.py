"""Simulated time: durations in scenario files, ISO-8601 stamps, the default start.

Simulated time is nanoseconds since the Unix epoch, UTC, like every ``ts`` on
the wire. Sites keep UTC as their local time (opening hours are UTC hours).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

NS_PER_S: Final = 1_000_000_000
NS_PER_HOUR: Final = 3600 * NS_PER_S
NS_PER_DAY: Final = 24 * NS_PER_HOUR

_PART: Final = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
_DURATION: Final = re.compile(rf"\A(?:{_PART})+\Z")
_UNIT_NS: Final = {
    "ms": 1_000_000,
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


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC with millisecond precision, e.g. ``2026-11-24T12:00:00.000Z``."""
    moment = dt.datetime.fromtimestamp(ts_ns // NS_PER_S, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % NS_PER_S // 1_000_000:03d}Z"


def parse_start(text: str) -> int:
    """An ISO-8601 time (``2026-11-24T00:00:00Z``; naive means UTC) -> nanoseconds."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time (e.g. 2026-11-24T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000


def default_start(now: dt.datetime | None = None) -> int:
    """Midnight UTC at the start of yesterday: recent (inside any retention),
    the same for every run on one day (reproducible), and a day of simulation
    started there ends before the present."""
    today = (now or dt.datetime.now(dt.UTC)).date()
    midnight = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(midnight.timestamp()) * NS_PER_S


def hour_of_week(ts_ns: int) -> tuple[int, int]:
    """(weekday with Monday = 0, hour of day) of a UTC time."""
    days, rest = divmod(ts_ns, NS_PER_DAY)
    return (days + 3) % 7, rest // NS_PER_HOUR  # 1970-01-01 was a Thursday

"""Time on the wire: every ``ts`` is nanoseconds since the Unix epoch, UTC; people
read it as ISO-8601 UTC (`iso`), and type it the same way (`parse_iso`)."""

from __future__ import annotations

import datetime as dt
from typing import Final

NS_PER_MS: Final = 1_000_000
NS_PER_S: Final = 1_000_000_000
NS_PER_HOUR: Final = 3600 * NS_PER_S
NS_PER_DAY: Final = 24 * NS_PER_HOUR


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC with millisecond precision, e.g. ``2026-11-24T12:00:00.000Z``."""
    moment = dt.datetime.fromtimestamp(ts_ns // NS_PER_S, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % NS_PER_S // NS_PER_MS:03d}Z"


def parse_iso(text: str) -> int:
    """An ISO-8601 time (``2026-11-24T00:00:00Z``; naive means UTC) -> nanoseconds."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time (e.g. 2026-11-24T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000

"""Simulated time: the default start of a run, and the hour of the week that drives
a merchant's trading pattern.

Simulated time is nanoseconds since the Unix epoch, UTC, like every ``ts`` on
the wire (`wire.timestamps`). Sites keep UTC as their local time (opening hours
are UTC hours).
"""

from __future__ import annotations

import datetime as dt

from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S


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

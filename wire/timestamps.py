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


# A ts in another unit, read as nanoseconds, lands in January 1970. Read in the unit
# it was written in, it falls between this and now: the guess the explanation names.
EARLIEST_GUESS_NS: Final = 946_684_800 * NS_PER_S  # 2000-01-01T00:00:00Z
_OTHER_UNITS: Final = (
    ("seconds", NS_PER_S),
    ("milliseconds", NS_PER_MS),
    ("microseconds", 1000),
)
_DURATION_UNITS: Final = (
    ("d", NS_PER_DAY),
    ("h", NS_PER_HOUR),
    ("m", 60 * NS_PER_S),
    ("s", NS_PER_S),
)
_SPANS: Final = (
    ("day", NS_PER_DAY),
    ("hour", NS_PER_HOUR),
    ("minute", 60 * NS_PER_S),
    ("second", NS_PER_S),
)


def implausible_ts(
    ts_ns: int, now_ns: int, *, max_age_ns: int | None, max_future_ns: int
) -> str | None:
    """Why ``ts_ns`` is not a plausible event time at ``now_ns``; None when it is.

    Plausible is ``[now - max_age, now + max_future]`` (no lower bound when
    ``max_age_ns`` is None). An implausible ts that reads as a time since 2000
    in seconds, milliseconds or microseconds is named as that unit mistake,
    also without a lower bound. The text names the gateway's settings of the
    bounds (docs/wire.md, "Plausible time").
    """
    latest = now_ns + max_future_ns
    if ts_ns > latest:
        return (
            f"ts {ts_ns} ({iso(ts_ns)}) is {_span(ts_ns - now_ns)} in the future, "
            f"beyond max_future_skew {duration_text(max_future_ns)}"
        )
    if max_age_ns is not None and ts_ns >= now_ns - max_age_ns:
        return None
    for unit, factor in _OTHER_UNITS:
        if EARLIEST_GUESS_NS <= ts_ns * factor <= latest:
            return (
                f"ts {ts_ns} is {iso(ts_ns)[:10]}: looks like {unit}, "
                f"ts is nanoseconds since the epoch (x{factor:,})"
            )
    if max_age_ns is None:
        return None
    return (
        f"ts {ts_ns} ({iso(ts_ns)}) is {_span(now_ns - ts_ns)} old, "
        f"more than max_event_age {duration_text(max_age_ns)}"
    )


def duration_text(ns: int) -> str:
    """Nanoseconds as a config file writes them: ``"30d"``, ``"1h30m"``, ``"250ms"``."""
    parts = []
    for unit, size in _DURATION_UNITS:
        count, ns = divmod(ns, size)
        if count:
            parts.append(f"{count}{unit}")
    if ns:
        ms, part = divmod(ns, NS_PER_MS)
        parts.append(f"{ms}.{part:06d}".rstrip("0").rstrip(".") + "ms")
    return "".join(parts) or "0s"


def _span(ns: int) -> str:
    """``"45 days"``, ``"30.4 days"``, ``"1.02 hours"``: in the largest unit it fills,
    precise enough to tell it from a bound just below it (61 minutes is not "1 hour")."""
    name, size = next(((name, size) for name, size in _SPANS if ns >= size), _SPANS[-1])
    value = ns / size
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    text = f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"
    return f"{text} {name}{'' if text == '1' else 's'}"

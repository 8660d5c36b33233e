"""Simulated time: durations, ISO stamps, the default start, hour of week."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.simtime import default_start, hour_of_week
from runtime.durations import parse_duration
from wire.timestamps import NS_PER_DAY, NS_PER_S, iso, parse_iso


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1.5h", 5400), ("11h30m", 41400), ("2d", 172800),
     ("250ms", 0.25), ("1d2h3m4s", 93784)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == round(seconds * NS_PER_S)


@pytest.mark.parametrize("text", ["", "soon", "5", "h", "5x", "1h 30m", "-5m"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="numbers with units"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s * NS_PER_S))
def test_iso_round_trips_through_parse_iso(ts_ns: int) -> None:
    assert parse_iso(iso(ts_ns)) == ts_ns


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1)))
def test_hour_of_week_agrees_with_datetime(moment: dt.datetime) -> None:
    aware = moment.replace(tzinfo=dt.UTC)
    ts_ns = int(aware.timestamp()) * NS_PER_S
    assert hour_of_week(ts_ns) == (aware.weekday(), aware.hour)


def test_default_start_is_midnight_yesterday() -> None:
    now = dt.datetime(2026, 11, 25, 23, 52, tzinfo=dt.UTC)
    start = default_start(now)
    assert iso(start) == "2026-11-24T00:00:00.000Z"
    assert start % NS_PER_DAY == 0
    assert parse_iso("2026-11-24T00:00:00") == start  # naive means UTC

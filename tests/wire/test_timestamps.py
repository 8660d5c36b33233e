"""wire.timestamps: which event times are plausible, and what an implausible one says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.durations import parse_duration
from wire.messages import MAX_NANOS
from wire.timestamps import (
    EARLIEST_GUESS_NS,
    NS_PER_DAY,
    NS_PER_MS,
    NS_PER_S,
    duration_text,
    implausible_ts,
)

NOW = 1_796_515_200 * NS_PER_S  # 2026-12-06T00:00:00Z
MAX_AGE = 30 * NS_PER_DAY
SKEW = 300 * NS_PER_S


def explain(ts: int, max_age: int | None = MAX_AGE) -> str | None:
    return implausible_ts(ts, NOW, max_age_ns=max_age, max_future_ns=SKEW)


@given(st.integers(NOW - MAX_AGE, NOW + SKEW))
def test_a_time_in_the_window_is_plausible(ts: int) -> None:
    assert explain(ts) is None


@given(st.integers(0, NOW - MAX_AGE - 1) | st.integers(NOW + SKEW + 1, MAX_NANOS))
def test_a_time_outside_the_window_is_explained_naming_it(ts: int) -> None:
    text = explain(ts)
    assert text is not None and text.startswith(f"ts {ts} ")


@pytest.mark.parametrize(
    ("ts", "unit"),
    [
        (EARLIEST_GUESS_NS // NS_PER_S, "seconds"),
        ((NOW + SKEW) // NS_PER_S, "seconds"),
        (EARLIEST_GUESS_NS // NS_PER_MS, "milliseconds"),
        ((NOW + SKEW) // NS_PER_MS, "milliseconds"),
        (EARLIEST_GUESS_NS // 1000, "microseconds"),
        ((NOW + SKEW) // 1000, "microseconds"),
    ],
)
def test_a_time_since_2000_in_another_unit_is_named_as_that_mistake(ts: int, unit: str) -> None:
    text = explain(ts)
    assert text is not None and f": looks like {unit}, ts is nanoseconds since the epoch" in text
    assert explain(ts, max_age=None) == text  # also where no age limit applies


@pytest.mark.parametrize(
    "ts",
    [
        0,  # a clock that never got set
        EARLIEST_GUESS_NS // NS_PER_S - 1,  # 1999 in seconds
        (NOW + SKEW) // NS_PER_S + 1,  # the future in seconds
        (NOW + SKEW) // NS_PER_MS + 1,
        EARLIEST_GUESS_NS // 1000 - 1,
        NOW - 400 * NS_PER_DAY,
    ],
)
def test_other_old_times_say_their_age_and_need_an_age_limit(ts: int) -> None:
    text = explain(ts)
    assert text is not None and text.endswith(" days old, more than max_event_age 30d")
    assert explain(ts, max_age=None) is None


@pytest.mark.parametrize(
    ("ts", "says"),
    [
        (NOW - 45 * NS_PER_DAY, "(2026-10-22T00:00:00.000Z) is 45 days old"),
        (NOW - 30 * NS_PER_DAY - 10 * 3600 * NS_PER_S, "is 30.4 days old"),
        (NOW - 100_000 * NS_PER_DAY, "is 100,000 days old"),
        (NOW + 7 * 60 * NS_PER_S, "(2026-12-06T00:07:00.000Z) is 7 minutes in the future"),
        (NOW + 3 * 3600 * NS_PER_S, "is 3 hours in the future"),
        (NOW + NS_PER_DAY, "is 1 day in the future"),
    ],
)
def test_the_age_or_lead_is_in_the_largest_unit_it_fills(ts: int, says: str) -> None:
    text = explain(ts)
    assert text is not None and says in text, text


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30d", 30 * NS_PER_DAY),
        ("5m", 300 * NS_PER_S),
        ("1h30m", 5400 * NS_PER_S),
        ("1d1h1m1s250ms", NS_PER_DAY + 3661 * NS_PER_S + 250 * NS_PER_MS),
        ("0s", 0),
    ],
)
def test_durations_are_written_as_config_files_write_them(text: str, ns: int) -> None:
    assert duration_text(ns) == text


@given(st.integers(0, 10**6 * NS_PER_DAY))
def test_a_written_duration_parses_back(ns: int) -> None:
    assert parse_duration(duration_text(ns)) == ns

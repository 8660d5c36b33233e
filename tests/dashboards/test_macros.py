"""The macro expander does what Grafana does; a multi-value regex selects exactly its values."""

from __future__ import annotations

import uuid

import pytest

from dashboards.errors import MacroError
from dashboards.macros import (
    Selection,
    TimeRange,
    expand,
    format_interval,
    interval_ms,
    used_variables,
)
from testkit.servers import InfluxDB1Server

DAY = TimeRange(1_700_000_000_000, 1_700_086_400_000)  # 24 h, in ms


def test_time_filter_is_grafanas_millisecond_range() -> None:
    assert expand('SELECT 1 FROM "m" WHERE $timeFilter', DAY) == (
        'SELECT 1 FROM "m" WHERE time >= 1700000000000ms and time <= 1700086400000ms'
    )


@pytest.mark.parametrize(
    ("range_ms", "min_interval", "expected"),
    [
        (86_400_000, "", "1m"),  # 86.4 s per point rounds to 1m
        (3_600_000, "", "5s"),  # 3.6 s -> 5s
        (3_600_000, "10s", "10s"),  # never below the min interval
        (7 * 86_400_000, "", "10m"),  # 604.8 s -> 10m
        (60_000, "", "50ms"),
    ],
)
def test_interval_is_range_over_max_data_points_rounded(
    range_ms: int, min_interval: str, expected: str
) -> None:
    time_range = TimeRange(0, range_ms)
    ms = interval_ms(time_range, max_data_points=1000, min_interval=min_interval)
    assert format_interval(ms) == expected
    query = expand("GROUP BY time($__interval) $interval $__interval_ms", time_range, interval=ms)
    assert query == f"GROUP BY time({expected}) {expected} {ms}"


@pytest.mark.parametrize(
    ("ms", "text"), [(90_000, "1m"), (7_200_000, "2h"), (172_800_000, "2d"), (500, "500ms")]
)
def test_interval_text_truncates_to_the_largest_unit(ms: int, text: str) -> None:
    assert format_interval(ms) == text


def test_range_variables_are_epoch_milliseconds() -> None:
    assert expand("time > ${__from}ms AND time <= $__to", DAY) == (
        "time > 1700000000000ms AND time <= 1700086400000"
    )


def test_variable_formats() -> None:
    multi = {"site": Selection(("s0.1", "s2"), multi=True)}
    single = {"site": Selection(("s0.1",))}
    number = {"site": Selection(("42",))}
    assert expand("/^${site:regex}$/", DAY, multi) == r"/^(s0\.1|s2)$/"
    assert expand("/^$site$/", DAY, multi) == r"/^(s0\.1|s2)$/"  # multi: the regex form
    assert expand("/^${site:regex}$/", DAY, single) == r"/^s0\.1$/"
    assert expand("'$site'", DAY, single) == r"'s0\.1'"  # Grafana's InfluxDB escaping
    assert expand("$site", DAY, number) == "42"
    assert expand("${site:raw}", DAY, multi) == "s0.1,s2"


def test_slashes_in_a_value_cannot_end_the_regex() -> None:
    assert expand("/^${s:regex}$/", DAY, {"s": Selection(("a/b",))}) == r"/^a\/b$/"


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("WHERE $__timeFilter", "$__timeFilter"),  # not an InfluxQL macro in Grafana
        ("WHERE site = '$nosuch'", "$nosuch"),
        ("${site:csv}", ":csv"),
    ],
)
def test_what_grafana_would_not_expand_is_an_error(query: str, complaint: str) -> None:
    with pytest.raises(MacroError, match=complaint.replace("$", r"\$")):
        expand(query, DAY, {"site": Selection(("a",))})


def test_a_backwards_time_range_is_an_error() -> None:
    with pytest.raises(MacroError, match="before it starts"):
        TimeRange(10, 5)


def test_used_variables_leaves_out_grafanas_own() -> None:
    query = "$timeFilter $__interval ${__to} $__interval_ms ${site:regex} $terminal"
    assert used_variables(query) == {"site", "terminal"}


SITES = ["s1", "s1.5", "s10", "xs1", "s(1)", "a/b", "s1|s10"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "chosen",
    [["s1"], ["s1", "s(1)"], ["s1.5", "a/b"], ["s1|s10"], SITES],
    ids=["one", "two", "dot-slash", "pipe", "all"],
)
def test_a_selection_matches_exactly_its_sites_in_influxdb(
    influxdb_session: InfluxDB1Server, chosen: list[str]
) -> None:
    db = f"macros_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(db)
    influxdb_session.write([f"m,site={site} v=1 {i}" for i, site in enumerate(SITES)], db)
    query = expand(
        'SELECT count("v") FROM "m" WHERE "site" =~ /^${site:regex}$/ GROUP BY "site"',
        TimeRange(0, 1000),
        {"site": Selection(tuple(chosen), multi=True)},
    )
    answer = influxdb_session.query(query, db=db)["results"][0]
    assert {series["tags"]["site"] for series in answer.get("series", [])} == set(chosen)

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.aggregates import (
    DECLINE_MEASUREMENT,
    DEVICE_MEASUREMENT,
    NS_PER_S,
    SITE_MEASUREMENT,
    Aggregator,
    nearest_rank,
)
from gateway.config import AggregatesSection
from testkit.factories import payment
from wire.lineproto import FieldValue, encode_point
from wire.messages import PaymentTransaction

MINUTE = 60 * NS_PER_S
T0 = 1_764_000_000 * NS_PER_S - 1_764_000_000 * NS_PER_S % MINUTE  # a window start
LATENESS = 120 * NS_PER_S

Point = tuple[str, dict[str, str], dict[str, float], int]


def parse_line(line: str) -> Point:
    """A line with plain tags and numeric fields (what aggregates and stats write)."""
    head, body, ts = line.split(" ")
    measurement, *tag_pairs = head.split(",")
    tags = dict(pair.split("=", 1) for pair in tag_pairs)
    fields = {}
    for pair in body.split(","):
        key, raw = pair.split("=", 1)
        fields[key] = float(raw[:-1]) if raw.endswith("i") else float(raw)
    return measurement, tags, fields, int(ts)


def by_measurement(lines: list[str]) -> dict[str, list[Point]]:
    points: dict[str, list[Point]] = {}
    for line in lines:
        point = parse_line(line)
        points.setdefault(point[0], []).append(point)
    return points


def event(seq: int, ts: int = T0, **overrides: object) -> PaymentTransaction:
    return payment(seq=seq, ts=ts, **overrides)


def aggregator(now: int = T0, **limits: int) -> Aggregator:
    return Aggregator("gw1", now, AggregatesSection(**limits))


def test_a_closed_window_yields_terminal_site_and_decline_points() -> None:
    agg = aggregator()
    events = [
        event(1, T0 + 1, amount_minor=1000, auth_latency_ms=100.0),
        event(2, T0 + 2, amount_minor=500, auth_latency_ms=300.0),
        event(3, T0 + 3, approved=False, response_code="51", auth_latency_ms=200.0),
        event(4, T0 + 4, device="pos-2", approved=False, response_code="51"),
        event(5, T0 + 5, device="pos-2", approved=False, response_code="05"),
        event(6, T0 + 6, site="store-2", device="pos-9", amount_minor=7),
    ]
    for e in events:
        agg.add(e, T0)  # arriving as they happen: the clock's offset is a few ns
    assert agg.close(T0 + MINUTE + LATENESS - 10) == []  # end not yet past the watermark
    points = by_measurement(agg.close(T0 + MINUTE + LATENESS))

    devices = {p[1]["device"]: p for p in points[DEVICE_MEASUREMENT]}
    assert set(devices) == {"pos-1", "pos-2", "pos-9"}
    _, tags, fields, ts = devices["pos-1"]
    assert tags == {"site": "store-1", "device": "pos-1", "gateway": "gw1"}
    assert ts == T0  # window start: re-emitting overwrites the same point
    assert fields == {
        "count": 3,
        "approved": 2,
        "declined": 1,
        "volume_minor": 1500,
        "approval_rate": 2 / 3,
        "latency_p50_ms": 200.0,
        "latency_p95_ms": 300.0,
        "latency_p99_ms": 300.0,
    }
    sites = {p[1]["site"]: p for p in points[SITE_MEASUREMENT]}
    assert sites["store-1"][1] == {"site": "store-1", "gateway": "gw1"}
    assert sites["store-1"][2]["count"] == 5
    assert sites["store-1"][2]["declined"] == 3
    assert sites["store-1"][2]["volume_minor"] == 1500
    assert sites["store-2"][2]["count"] == 1
    declines = {
        (p[1]["site"], p[1]["response_code"]): p[2]["count"] for p in points[DECLINE_MEASUREMENT]
    }
    assert declines == {("store-1", "51"): 2, ("store-1", "05"): 1}
    assert all(p[1]["gateway"] == "gw1" for ps in points.values() for p in ps)
    stats = agg.stats()
    assert (stats.open_windows, stats.open_keys, stats.open_values) == (0, 0, 0)
    assert (stats.windows_closed, stats.points, stats.events) == (1, 7, 6)


def test_percentiles_are_exact_nearest_rank() -> None:
    agg = aggregator()
    for n in range(1, 101):
        agg.add(event(n, T0 + n, auth_latency_ms=float(101 - n)), T0)
    [(_, _, fields, _)] = by_measurement(agg.close(T0 + MINUTE + LATENESS))[DEVICE_MEASUREMENT]
    assert (fields["latency_p50_ms"], fields["latency_p95_ms"], fields["latency_p99_ms"]) == (
        50.0,
        95.0,
        99.0,
    )


@given(st.lists(st.floats(min_value=0, max_value=600_000), min_size=1), st.floats(0.01, 1.0))
def test_nearest_rank_is_the_smallest_value_with_q_of_the_values_at_or_below(
    values: list[float], q: float
) -> None:
    ordered = sorted(values)
    result = nearest_rank(ordered, q)
    assert sum(v <= result for v in ordered) >= q * len(ordered) - 1e-9
    assert sum(v < result for v in ordered) < q * len(ordered)


def test_windows_close_when_traffic_stops_and_each_only_once() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 5), T0)
    agg.add(event(2, T0 + MINUTE + 5), T0 + MINUTE)
    first = agg.close(T0 + MINUTE + LATENESS)
    assert {parse_line(line)[3] for line in first} == {T0}
    second = agg.close(T0 + 2 * MINUTE + LATENESS)
    assert {parse_line(line)[3] for line in second} == {T0 + MINUTE}
    assert agg.close(T0 + 10 * MINUTE) == []


def test_late_events_are_counted_and_left_out() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 5), T0)
    agg.close(T0 + MINUTE + LATENESS)  # closes window T0
    agg.add(event(2, T0 + 6), T0 + MINUTE + LATENESS)
    assert agg.stats().late_events == 1
    assert agg.stats().open_windows == 0
    assert agg.close(T0 + 5 * MINUTE) == []


def test_lateness_is_measured_on_the_event_clock_not_the_wall_clock() -> None:
    # Events that reach the gateway three minutes after they happened (a steady
    # delivery delay) are in time: the clock runs three minutes behind the wall.
    delay = 3 * MINUTE
    agg = aggregator()
    agg.add(event(1, T0 + 5), T0 + 5 + delay)
    assert agg.close(T0 + 5 + delay) == []
    agg.add(event(2, T0 + 6), T0 + 6 + delay)
    assert agg.stats().late_events == 0
    assert len(agg.close(T0 + MINUTE + LATENESS + delay + 5)) == 2  # device + site


def test_an_accelerated_stream_closes_windows_as_its_event_time_advances() -> None:
    # A simulated fleet at x60 replaying the past hour (firmware_sim starts in the
    # past): an hour of events, 20 a minute, within one wall minute.
    agg = aggregator()
    emitted: set[int] = set()
    for n in range(60 * 20):
        ts = T0 + n * 3 * NS_PER_S
        wall = T0 + 60 * MINUTE + n * NS_PER_S // 20
        agg.add(event(n, ts, device=f"pos-{n % 20}"), wall)
        emitted |= {parse_line(line)[3] for line in agg.close(wall)}
    # Every window is out but the last few: the lateness (2 min) plus the clock's
    # lag behind the newest event (a tenth of the recent samples: ~5 simulated min).
    assert {T0 + n * MINUTE for n in range(60 - 8)} <= emitted
    assert agg.stats().late_events == 0


def test_a_few_skewed_clocks_do_not_drag_the_watermark() -> None:
    agg = aggregator()
    for n in range(20):
        agg.add(event(n, T0 + n), T0 + n)
        agg.close(T0 + n)
    agg.add(event(99, T0 + 30 * MINUTE, device="pos-skewed"), T0 + 21)  # half an hour ahead
    agg.close(T0 + 22)
    agg.add(event(21, T0 + 23), T0 + 23)
    stats = agg.stats()
    assert (stats.late_events, stats.future_events) == (0, 1)
    assert stats.watermark_ns < T0


def test_a_restarted_aggregator_does_not_reemit_its_predecessors_windows() -> None:
    # The predecessor handled five minutes of traffic; its successor gets the
    # backlog from where the predecessor stopped acknowledging, then live traffic.
    before, after = aggregator(), aggregator()
    emitted_before: list[int] = []
    for n in range(300):
        ts = T0 + n * NS_PER_S
        before.add(event(n, ts), ts)
        emitted_before += [parse_line(line)[3] for line in before.close(ts)]
    emitted_after: list[int] = []
    for n in range(300, 600):
        ts = T0 + n * NS_PER_S
        after.add(event(n, ts), ts + 30 * NS_PER_S)  # a 30 s backlog after the restart
        emitted_after += [parse_line(line)[3] for line in after.close(ts + 30 * NS_PER_S)]
    assert emitted_before and emitted_after
    assert not set(emitted_before) & set(emitted_after)


def test_a_clock_stepping_back_does_not_reopen_windows() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 5), T0 + 5)
    agg.close(T0 + MINUTE + LATENESS)  # closes window T0
    agg.close(T0)  # the wall clock stepped back
    agg.add(event(2, T0 + 6), T0 + 6)
    assert agg.stats().late_events == 1
    assert agg.stats().watermark_ns == T0 + MINUTE


def test_events_beyond_the_wall_clock_tolerance_are_counted_and_left_out() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 1), T0 + 1)
    agg.add(event(2, T0 + 10 * MINUTE), T0 + 2)  # 10 min ahead of the wall: tolerance 5 min
    agg.add(event(3, T0 + 4 * MINUTE), T0 + 3)  # within the tolerance
    stats = agg.stats()
    assert (stats.future_events, stats.events) == (1, 2)
    closed = agg.close(T0 + 15 * MINUTE)
    assert {parse_line(line)[3] for line in closed} == {T0, T0 + 4 * MINUTE}


def test_one_device_whose_clock_says_2262_does_not_make_other_payments_late() -> None:
    # Its payment comes first, when it alone would be the clock's 90th percentile.
    agg = aggregator()
    agg.add(event(1, 9_214_646_400 * NS_PER_S, device="pos-2262"), T0)  # 2262-01-01
    agg.close(T0)
    for n in range(2, 50):
        wall = T0 + n * NS_PER_S
        agg.add(event(n, wall, device=f"pos-{n % 5}"), wall)
        agg.close(wall)
    stats = agg.stats()
    assert (stats.future_events, stats.late_events, stats.events) == (1, 0, 48)
    assert stats.watermark_ns < T0
    lines = agg.close(T0 + MINUTE + LATENESS)
    device_points = by_measurement(lines)[DEVICE_MEASUREMENT]
    assert sum(point[2]["count"] for point in device_points) == 48


def test_open_windows_are_capped_and_drops_counted() -> None:
    agg = aggregator(max_open_windows=2)
    for n in range(4):
        agg.add(event(n, T0 + n * MINUTE), T0)
    stats = agg.stats()
    assert (stats.open_windows, stats.dropped_window_cap, stats.events) == (2, 2, 2)


def test_open_keys_are_capped_and_drops_counted() -> None:
    agg = aggregator(max_open_keys=3)
    for n in range(5):
        agg.add(event(n, T0 + n, device=f"pos-{n}"), T0)
    agg.add(event(9, T0 + 9, device="pos-0"), T0)  # an open key still takes events
    stats = agg.stats()
    assert (stats.open_keys, stats.dropped_key_cap, stats.events) == (3, 2, 4)
    agg.close(T0 + MINUTE + LATENESS)
    assert agg.stats().open_keys == 0


def test_stored_latencies_are_capped_and_the_rest_counted() -> None:
    agg = aggregator(max_open_values=3)
    for n in range(5):
        agg.add(event(n, T0 + n, auth_latency_ms=float(n)), T0)
    stats = agg.stats()
    assert (stats.open_values, stats.unsampled_latencies, stats.events) == (3, 2, 5)
    [(_, _, fields, _)] = by_measurement(agg.close(T0 + MINUTE + LATENESS))[DEVICE_MEASUREMENT]
    assert fields["count"] == 5
    assert fields["latency_p99_ms"] == 2.0
    assert agg.stats().open_values == 0


def test_counts_and_sums_add_up_across_gateways() -> None:
    events = [
        event(n, T0 + n, approved=n % 3 != 0, response_code="00" if n % 3 else "05")
        for n in range(30)
    ]
    alone, first, second = aggregator(), Aggregator("gw2", T0, AggregatesSection()), aggregator()
    for n, e in enumerate(events):
        alone.add(e, T0)
        (first if n % 2 else second).add(e, T0)
    end = T0 + MINUTE + LATENESS

    def totals(lines: list[str]) -> tuple[float, float, float]:
        sites = by_measurement(lines)[SITE_MEASUREMENT]
        return (
            sum(p[2]["count"] for p in sites),
            sum(p[2]["approved"] for p in sites),
            sum(p[2]["volume_minor"] for p in sites),
        )

    together = [
        sum(x) for x in zip(totals(first.close(end)), totals(second.close(end)), strict=True)
    ]
    assert together == list(totals(alone.close(end)))


def test_approval_rate_and_latencies_need_no_approved_event() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 1, approved=False, response_code="05"), T0)
    [(_, _, fields, _)] = by_measurement(agg.close(T0 + MINUTE + LATENESS))[DEVICE_MEASUREMENT]
    assert fields["approval_rate"] == 0.0
    assert math.isfinite(fields["latency_p50_ms"])


def test_lines_are_what_the_canonical_encoder_writes() -> None:
    agg = aggregator()
    agg.add(event(1, T0 + 1, auth_latency_ms=12.5), T0)
    agg.add(event(2, T0 + 2, approved=False, response_code="05"), T0)
    device_line, site_line, _ = agg.close(T0 + MINUTE + LATENESS)
    fields: dict[str, FieldValue] = {
        "count": 2,
        "approved": 1,
        "declined": 1,
        "volume_minor": 1299,
        "approval_rate": 0.5,
        "latency_p50_ms": 12.5,
        "latency_p95_ms": 312.5,
        "latency_p99_ms": 312.5,
    }
    tags = {"site": "store-1", "gateway": "gw1"}
    assert device_line == encode_point(DEVICE_MEASUREMENT, {**tags, "device": "pos-1"}, fields, T0)
    assert site_line == encode_point(SITE_MEASUREMENT, tags, fields, T0)

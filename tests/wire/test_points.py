from hypothesis import given
from hypothesis import strategies as st

from tests import strategies as s
from tests.wire.test_messages import TS, payment
from wire import messages as m
from wire.points import Measurement, point_time_ns, to_line, to_point


@given(ts=s.nanos, seq=s.seqs)
def test_point_time_stays_within_the_events_millisecond(ts: int, seq: int) -> None:
    point_ts = point_time_ns(ts, seq)
    assert point_ts // 1_000_000 == ts // 1_000_000
    assert point_ts % 1_000_000 == seq % 1_000_000


@given(ts=s.nanos, seq=s.seqs, other=st.integers(min_value=1, max_value=999_999))
def test_distinct_events_of_a_device_never_share_a_point_time(
    ts: int, seq: int, other: int
) -> None:
    # Worst case: a stuck clock, so both events carry the very same ts.
    assert point_time_ns(ts, seq) != point_time_ns(ts, seq + other)


@given(s.any_messages)
def test_redelivered_message_encodes_to_the_identical_line(message: m.Message) -> None:
    assert to_line(m.decode(m.encode(message))) == to_line(message)


def test_payment_point_keeps_high_cardinality_values_out_of_tags() -> None:
    point = to_point(payment())
    assert point.measurement == Measurement.PAYMENT
    assert point.tags == {"site": "store-1", "device": "pos-1", "acquirer": "acq-a"}
    assert point.fields["txn_id"] == "t-0001"
    assert point.fields["card_token"] == payment().card_token
    assert point.fields["approved"] == 1
    assert point.time_ns == TS - TS % 1_000_000 + 42


def test_float_fields_stay_floats_even_when_built_from_ints() -> None:
    # A float field written once as 50i and once as 50.5 is a type conflict in InfluxDB.
    line = to_line(payment(auth_latency_ms=300))
    assert "auth_latency_ms=300.0," in line


def test_online_and_last_will_at_the_same_instant_are_distinct_points() -> None:
    online = m.DeviceState(site="s", device="d", ts=TS, online=True, reason=m.StateReason.CONNECTED)
    offline = m.DeviceState(
        site="s", device="d", ts=TS, online=False, reason=m.StateReason.LAST_WILL
    )
    assert to_point(online).tags != to_point(offline).tags

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testkit.factories import TS, payment
from tests import strategies as s
from wire import messages as m
from wire.errors import LineProtocolError
from wire.points import point_time_ns, to_line


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


def test_payment_line_keeps_high_cardinality_values_out_of_tags() -> None:
    token = payment().card_token
    assert to_line(payment()) == (
        "payment,acquirer=acq-a,device=pos-1,site=store-1 "
        f'seq=42i,txn_id="t-0001",card_token="{token}",amount_minor=1299i,currency="EUR",'
        'method="contactless",mcc="5411",response_code="00",approved=1i,'
        f"auth_latency_ms=312.5,offline=0i {TS - TS % 1_000_000 + 42}"
    )


def test_hostile_values_in_unvalidated_messages_are_escaped_or_refused() -> None:
    # Messages built in code skip msgspec's validation; the encoder still guards.
    assert "acquirer=acq\\ a\\,x\\=1," in to_line(payment(acquirer="acq a,x=1"))
    with pytest.raises(LineProtocolError):
        to_line(payment(device="pos\n1"))
    with pytest.raises(LineProtocolError):
        to_line(payment(seq="42"))


def test_float_fields_stay_floats_even_when_built_from_ints() -> None:
    # A float field written once as 50i and once as 50.5 is a type conflict in InfluxDB.
    line = to_line(payment(auth_latency_ms=300))
    assert "auth_latency_ms=300.0," in line


def test_online_and_last_will_at_the_same_instant_are_distinct_points() -> None:
    # The tag sets differ, so the two points cannot overwrite each other.
    online = m.DeviceState(site="s", device="d", ts=TS, online=True, reason=m.StateReason.CONNECTED)
    offline = m.DeviceState(
        site="s", device="d", ts=TS, online=False, reason=m.StateReason.LAST_WILL
    )
    assert to_line(online).split(" ")[0] != to_line(offline).split(" ")[0]

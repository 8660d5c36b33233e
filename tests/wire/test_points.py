import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from testkit.factories import TS, payment
from tests import strategies as s
from wire import messages as m
from wire.errors import LineProtocolError
from wire.lineproto import string_content, tag_value
from wire.pci import payload_contains_pan
from wire.points import decoded_to_line, point_time_ns, to_line


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
    assume(not payload_contains_pan(m.encode(message)))  # a ts can spell one: refused
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


# -- the decoded path: values as they are -------------------------------------------------------


@given(s.any_messages)
def test_a_decoded_message_gets_the_line_of_the_checked_path(message: m.Message) -> None:
    assume(not payload_contains_pan(m.encode(message)))  # a ts can spell one: refused
    decoded = m.decode(m.encode(message))
    assert decoded_to_line(decoded) == to_line(decoded)


_AS_IS_TYPES = (m.PaymentTransaction, m.TerminalStatus, m.SensorReading, m.DeviceState)


@given(st.data())
def test_every_string_the_schema_admits_is_written_as_it_is(data: st.DataObject) -> None:
    # decoded_to_line writes these values unescaped: their patterns must leave nothing to escape.
    cls = data.draw(st.sampled_from(_AS_IS_TYPES))
    for field in msgspec.inspect.type_info(cls).fields:
        if isinstance(field.type, msgspec.inspect.StrType):
            assert field.type.pattern is not None, (cls, field.name)
            value = data.draw(st.from_regex(field.type.pattern, fullmatch=True))
            assert tag_value(value) == value and string_content(value) == value
        elif isinstance(field.type, msgspec.inspect.EnumType):
            for member in field.type.cls:
                assert tag_value(member.value) == string_content(member.value) == member.value
        elif isinstance(field.type, msgspec.inspect.IntType):  # within int64
            assert field.type.ge is not None and field.type.ge >= -(2**63), (cls, field.name)
            top = field.type.le if field.type.lt is None else field.type.lt - 1
            assert top is not None and top <= 2**63 - 1, (cls, field.name)
        elif isinstance(field.type, msgspec.inspect.FloatType):  # finite: never NaN or inf
            assert None not in (field.type.ge, field.type.le), (cls, field.name)
        else:
            assert isinstance(field.type, msgspec.inspect.BoolType), (cls, field.name)

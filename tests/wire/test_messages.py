from collections.abc import Callable

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from testkit.factories import TS, next_status, payment, payment_json
from tests import strategies as s
from tests.wire.pan_spellings import json_escaped, pans, spelled
from wire import messages as m
from wire import pci
from wire.errors import MessageDecodeError, PanDetectedError, TopicError
from wire.pci import payload_contains_pan
from wire.topics import DeviceTopic, Stream


@given(s.any_messages)
def test_every_message_round_trips(message: m.Message) -> None:
    assume(not payload_contains_pan(m.encode(message)))  # a short ts can spell one: refused
    assert m.decode(m.encode(message)) == message
    assert m.decode_as(m.encode(message), type(message)) == message


def test_payload_carries_its_schema_and_version() -> None:
    doc = msgspec.json.decode(m.encode(payment()))
    assert doc["schema"] == "payment/1"
    assert "pan" not in doc and "card_number" not in doc


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"seq": "42"}, "$.seq"),
        ({"seq": -1}, "$.seq"),
        ({"amount_minor": 1.5}, "$.amount_minor"),
        ({"currency": "eur"}, "$.currency"),
        ({"method": "telepathy"}, "$.method"),
        ({"site": "bad site"}, "$.site"),
        ({"device": "pos-1\n"}, "$.device"),
        ({"card_token": "ct1_short"}, "$.card_token"),
        ({"auth_latency_ms": -3}, "$.auth_latency_ms"),
        ({"approved": "yes"}, "$.approved"),
    ],
)
def test_strict_decoding_names_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(MessageDecodeError) as info:
        m.decode(msgspec.json.encode(payment_json(**overrides)))
    assert field in str(info.value)


def test_missing_and_unknown_fields_are_named() -> None:
    doc = payment_json()
    del doc["acquirer"]
    with pytest.raises(MessageDecodeError, match="acquirer"):
        m.decode(msgspec.json.encode(doc))
    with pytest.raises(MessageDecodeError, match="pan"):
        m.decode(msgspec.json.encode(payment_json(pan="4111111111111111")))


def test_other_versions_and_types_are_refused() -> None:
    with pytest.raises(MessageDecodeError, match=r"\$\.schema"):
        m.decode(msgspec.json.encode(payment_json(schema="payment/2")))
    with pytest.raises(MessageDecodeError, match="schema"):
        m.decode_as(m.encode(payment()), m.TerminalStatus)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe\x00", b"null", b"[]", b"{", b"[" * 100_000, b'{"schema": 1}'],
)
def test_garbage_gets_a_clear_error(payload: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        m.decode(payload)


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MessageDecodeError, match="exceeds"):
        m.decode(b" " * (m.MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("txn_id", "4111111111111111"),
        ("acquirer", "acq-4111111111111111"),
        ("txn_id", "5555555555554444-x"),
    ],
)
def test_card_numbers_in_any_string_are_refused_without_echoing_them(
    field: str, value: str
) -> None:
    with pytest.raises(PanDetectedError) as info:
        m.decode(msgspec.json.encode(payment_json(**{field: value})))
    assert field in str(info.value)
    assert "4111" not in str(info.value) and "5555" not in str(info.value)


def test_alert_summary_with_a_pan_is_refused() -> None:
    alert = m.Alert(
        alert_id="a-1",
        ts=TS,
        type="card_testing",
        severity=m.Severity.CRITICAL,
        status=m.AlertStatus.FIRING,
        score=0.9,
        detector="rules",
        summary="card 4111 1111 1111 1111 seen on 40 terminals",
    )
    with pytest.raises(PanDetectedError, match="summary"):
        m.decode(m.encode(alert))


def test_device_message_must_match_its_topic() -> None:
    data = m.encode(payment())
    topic = DeviceTopic("store-1", "pos-1", Stream.PAYMENT)
    assert m.decode_device_message(topic, data) == payment()
    with pytest.raises(TopicError, match="do not match"):
        m.decode_device_message(DeviceTopic("store-1", "pos-2", Stream.PAYMENT), data)
    with pytest.raises(MessageDecodeError):
        m.decode_device_message(DeviceTopic("store-1", "pos-1", Stream.STATUS), data)


def test_every_stream_has_a_message_type() -> None:
    assert set(m.MESSAGE_FOR_STREAM) == set(Stream)
    for stream, cls in m.MESSAGE_FOR_STREAM.items():
        assert m.STREAM_FOR_MESSAGE[cls] is stream


# -- limits before decoding -------------------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 1_000, 1_500, 5_000])
@pytest.mark.parametrize("where", ["first", "last"])
def test_deep_nesting_is_a_decode_error_not_a_recursion_error(depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    doc = f'{{"x":{nested},"schema":"payment/1"}}' if where == "first" else f"{nested}"
    for decoder in (m.decode, lambda data: m.decode_as(data, m.PaymentTransaction)):
        with pytest.raises(MessageDecodeError, match="nest deeper than 32"):
            decoder(doc.encode())


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    doc = payment_json(txn_id="t-1")
    data = msgspec.json.encode(doc).replace(b'"t-1"', b'"' + b"[" * 40 + b'"')
    with pytest.raises(MessageDecodeError, match=r"\$\.txn_id"):  # the pattern, not the depth
        m.decode(data)


@pytest.mark.parametrize("cls", [m.PaymentTransaction, m.TerminalStatus, m.Alert, m.LinkAck])
def test_the_schema_field_is_required(cls: type[m.WireStruct]) -> None:
    doc = payment_json()
    del doc["schema"]
    with pytest.raises(MessageDecodeError, match="missing required field `schema`"):
        m.decode_as(msgspec.json.encode(doc), cls)
    with pytest.raises(MessageDecodeError, match="missing required field `schema`"):
        m.decode(msgspec.json.encode(doc))
    topic = DeviceTopic("store-1", "pos-1", Stream.PAYMENT)
    with pytest.raises(MessageDecodeError, match="missing required field `schema`"):
        m.decode_device_message(topic, msgspec.json.encode(doc))


def test_the_placeholder_schema_is_refused() -> None:
    with pytest.raises(MessageDecodeError, match=r"\$\.schema"):
        m.decode_as(b'{"schema": "\\u0000"}', m.PaymentTransaction)


# -- card numbers in every field and spelling --------------------------------------------------

STRING_FIELDS = ["txn_id", "acquirer", "site", "device", "card_token", "currency", "mcc", "x"]
INTEGER_FIELDS = ["seq", "amount_minor", "ts_ms", "y"]


@given(pans().flatmap(spelled), st.sampled_from(STRING_FIELDS), st.booleans())
def test_a_card_number_in_any_string_field_is_refused(text: str, field: str, escaped: bool) -> None:
    value = json_escaped(text) if escaped else text
    raw = msgspec.json.encode(payment_json(**{field: "PLACEHOLDER"}))
    data = raw.replace(b"PLACEHOLDER", value.encode())
    assert payload_contains_pan(data)
    with pytest.raises(PanDetectedError) as info:
        m.decode(data)
    assert_no_digits_of(text, str(info.value))


@given(pans(), st.sampled_from(INTEGER_FIELDS))
def test_a_card_number_as_an_integer_is_refused(pan: str, field: str) -> None:
    data = msgspec.json.encode(payment_json(**{field: int(pan)}))
    with pytest.raises(PanDetectedError) as info:
        m.decode(data)
    assert_no_digits_of(pan, str(info.value))


@given(pans())
def test_a_card_number_in_a_status_firmware_is_refused(pan: str) -> None:
    status = msgspec.json.decode(m.encode(next_status()))
    status["firmware"] = "5555 5555 5555 4444" if pan.startswith("0") else pan[:4] + " " + pan[4:]
    with pytest.raises(PanDetectedError, match="firmware"):
        m.decode(msgspec.json.encode(status))


def assert_no_digits_of(pan_text: str, error: str) -> None:
    assert not pci.contains_pan(error)
    assert not any(c.isdigit() for c in error.replace("card_token", ""))


@given(s.payments, st.integers(min_value=10**18, max_value=m.MAX_NANOS))
def test_ordinary_ids_timestamps_and_amounts_pass(payment: m.PaymentTransaction, ts: int) -> None:
    ordinary = msgspec.structs.replace(payment, ts=ts, txn_id="T1" + str(ts)[:15])
    assert m.decode(m.encode(ordinary)) == ordinary


# -- the fast path of decode_device_message ----------------------------------------------------

_ODD_VALUES = st.one_of(
    st.sampled_from(["bad id", "", "EUR", "eur", "x" * 70, "ct1_short", "00", "chip", "a\x00b"]),
    st.text(max_size=12),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)


@given(s.payments, st.data())
def test_decoding_a_payment_fast_gives_what_strict_decoding_gives(
    message: m.PaymentTransaction, data: st.DataObject
) -> None:
    items = list(msgspec.json.decode(m.encode(message)).items())
    cls, at = type(message), data.draw(st.integers(0, len(items) - 1))
    key = items[at][0]
    change = data.draw(st.sampled_from(["none", "replace", "repeat", "drop", "spaces"]))
    if change == "replace":
        items[at] = (key, data.draw(_ODD_VALUES))
    elif change == "repeat":  # an odd first occurrence: strict decoding checks every one
        items.insert(at, (key, data.draw(_ODD_VALUES)))
    elif change == "drop":
        del items[at]
    sep = b", " if change == "spaces" else b","
    raw = b"{" + sep.join(msgspec.json.encode(k) + b":" + msgspec.json.encode(v) for k, v in items)
    raw += b"}"
    topic = DeviceTopic(message.site, message.device, m.STREAM_FOR_MESSAGE[cls])
    assert _result(lambda: m.decode_device_message(topic, raw)) == _result(
        lambda: _strictly(topic, raw, cls)
    )
    # The fast path is taken for what an agent sends, or this test would prove nothing.
    fast = m._fast_decoder_for(cls)
    assert fast is not None and fast.decode(m.encode(message)) == message


def test_a_repeated_key_is_checked_at_every_occurrence() -> None:
    data = m.encode(payment()).replace(b'"site":', b'"site":"bad id","site":', 1)
    with pytest.raises(MessageDecodeError, match=r"\$\.site"):
        m.decode_device_message(DeviceTopic("store-1", "pos-1", Stream.PAYMENT), data)


def _strictly(topic: DeviceTopic, data: bytes, cls: type[m.WireStruct]) -> m.WireStruct:
    """decode_device_message by the strict decoder alone (decode_as has no fast path)."""
    message = m.decode_as(data, cls)
    if (message.site, message.device) != (topic.site, topic.device):  # type: ignore[attr-defined]
        raise TopicError("do not match")
    return message


def _result(decode: Callable[[], m.WireStruct]) -> object:
    """What ``decode`` returned (with its exact type), or the type and text of its error."""
    try:
        message = decode()
    except (MessageDecodeError, TopicError) as exc:
        return type(exc), str(exc) if not isinstance(exc, TopicError) else ""
    return type(message), message

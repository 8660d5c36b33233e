import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import InvalidIdError, TopicError
from wire.topics import (
    DeviceTopic,
    Stream,
    alert_topic,
    deadletter_topic,
    device_subscription,
    device_topic,
    parse_device_topic,
    validate_id,
)

VALID_ID = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def test_device_topic_layout() -> None:
    assert device_topic("store-042", "pos-7", Stream.PAYMENT) == "tp/v1/dev/store-042/pos-7/payment"
    assert device_topic("s1", "d1", "status") == "tp/v1/dev/s1/d1/status"


@given(site=VALID_ID, device=VALID_ID, stream=st.sampled_from(Stream))
def test_build_then_parse_round_trips(site: str, device: str, stream: Stream) -> None:
    assert parse_device_topic(device_topic(site, device, stream)) == DeviceTopic(
        site, device, stream
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "a/b",
        "+",
        "#",
        "$SYS",
        "dev ice",
        "x\x00y",
        "-leading-dash",
        ".hidden",
        "é",
        "a" * 65,
        "pos-7/../../other",
        "line\nbreak",
    ],
)
def test_hostile_ids_are_rejected_never_interpolated(hostile: str) -> None:
    with pytest.raises(InvalidIdError, match="not a valid id"):
        device_topic("site", hostile, Stream.STATUS)
    with pytest.raises(InvalidIdError):
        device_topic(hostile, "dev", Stream.STATUS)
    with pytest.raises(InvalidIdError):
        alert_topic(hostile, "card_testing")


def test_non_string_id_is_rejected() -> None:
    with pytest.raises(InvalidIdError, match="must be a string"):
        validate_id(42, "device")


@pytest.mark.parametrize(
    "topic",
    [
        "tp/v1/dev/s1/d1",  # too short
        "tp/v1/dev/s1/d1/payment/extra",  # too long
        "tp/v2/dev/s1/d1/payment",  # other version
        "tp/v1/dev/s1/d1/unknown",  # unknown stream
        "tp/v1/dev/s+1/d1/payment",  # bad site
        "tp/v1/dev/s1//payment",  # empty device
        "tp/v1/alerts/s1/offline",
    ],
)
def test_parse_rejects_topics_outside_the_scheme(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_device_topic(topic)


def test_subscriptions() -> None:
    assert device_subscription() == "tp/v1/dev/+/+/+"
    assert device_subscription("gateways") == "$share/gateways/tp/v1/dev/+/+/+"
    with pytest.raises(InvalidIdError):
        device_subscription("bad/group")


def test_alert_and_deadletter_topics_do_not_overlap_device_topics() -> None:
    assert alert_topic("s1", "card_testing") == "tp/v1/alerts/s1/card_testing"
    assert deadletter_topic("gw-1") == "tp/v1/deadletter/gw-1"
    with pytest.raises(TopicError):
        parse_device_topic(deadletter_topic("gw-1"))

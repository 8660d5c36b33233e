"""No card number gets through the gateway's pipeline, in any field or spelling.

`Pipeline.process` alone (no server): whatever the payload, an outcome's line
(what is spooled and written to InfluxDB) and its detail (what is logged and
dead-lettered as the reason) never hold a card number, and a payload that holds
one is never kept (``keep_payload`` False).
"""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline import Pipeline, RejectReason, Verdict
from testkit.factories import TS, payment_json
from tests.wire.pan_spellings import json_escaped, pans, spelled
from wire import pci
from wire.topics import device_topic

TOPIC = device_topic("store-1", "pos-1", "payment")
FIELDS = ["txn_id", "acquirer", "site", "device", "card_token", "mcc", "method", "unknown"]
NUMBER_FIELDS = ["seq", "amount_minor", "auth_latency_ms", "unknown"]


def assert_nothing_of_it_is_kept(payload: bytes, topic: str = TOPIC) -> None:
    outcome = Pipeline("gw-test", TS).process(topic, payload, TS)
    assert outcome.verdict is Verdict.REJECTED
    assert outcome.reason is RejectReason.PAN_DETECTED
    assert not outcome.keep_payload
    assert outcome.line is None
    assert not pci.contains_pan(outcome.detail)


@given(pans().flatmap(spelled), st.sampled_from(FIELDS), st.booleans())
def test_a_card_number_in_any_string_field_is_never_kept(
    text: str, field: str, escaped: bool
) -> None:
    raw = msgspec.json.encode(payment_json(**{field: "PLACEHOLDER"}))
    value = json_escaped(text) if escaped else text
    assert_nothing_of_it_is_kept(raw.replace(b"PLACEHOLDER", value.encode()))


@given(pans(), st.sampled_from(NUMBER_FIELDS), st.sampled_from(["", ".0"]))
def test_a_card_number_as_a_number_is_never_kept(pan: str, field: str, fraction: str) -> None:
    raw = msgspec.json.encode(payment_json(**{field: 0}))
    assert_nothing_of_it_is_kept(raw.replace(b":0", f":{pan}{fraction}".encode(), 1))


@given(pans(), st.sampled_from(["site", "device"]))
def test_a_card_number_in_the_topic_is_never_kept(pan: str, part: str) -> None:
    ids = {"site": "store-1", "device": "pos-1", part: f"x{pan}"}
    topic = device_topic(ids["site"], ids["device"], "payment")
    assert_nothing_of_it_is_kept(msgspec.json.encode(payment_json()), topic)


def test_a_deeply_nested_payload_is_a_counted_rejection_that_is_kept() -> None:
    pipeline = Pipeline("gw-test", TS)
    nested = b'{"x":' + b"[" * 1500 + b"]" * 1500 + b',"schema":"payment/1"}'
    outcome = pipeline.process(TOPIC, nested, TS)
    assert outcome.reason is RejectReason.DECODE_ERROR and outcome.keep_payload
    assert "nest deeper" in outcome.detail
    assert pipeline.stats().rejected["decode_error"] == 1


@given(st.integers(min_value=10**18, max_value=2**62), st.integers(1, 10**12))
def test_ordinary_timestamps_seqs_and_ids_are_accepted(ts: int, seq: int) -> None:
    doc = payment_json(ts=ts, seq=seq, txn_id=f"txn-{seq % 10**9}")
    outcome = Pipeline("gw-test", ts).process(TOPIC, msgspec.json.encode(doc), ts)
    assert outcome.verdict is Verdict.ACCEPTED, outcome.detail
    assert outcome.line is not None
    fields = outcome.line.rpartition(" ")[0]  # the last word, the point time, is ts (+ seq)
    assert not pci.contains_pan(fields)


@given(pans().flatmap(spelled))
def test_a_publish_the_mqtt_codec_refused_is_kept_only_without_a_card_number(text: str) -> None:
    """The ingest keeps such a packet whole: the pipeline decides, as for any rejection."""
    pipeline = Pipeline("gw-test", TS)
    clean = b"\x3a\x0b\x00\x04tp/a\x00\x4d\x01\x7f{}"  # a PUBLISH with an unknown property
    refused = pipeline.reject_unreadable("tp/a", clean, "ValueError: PropertyType")
    assert (refused.reason, refused.keep_payload) == (RejectReason.NOT_MQTT, True)
    with_pan = clean + json_escaped(text).encode()
    outcome = pipeline.reject_unreadable("tp/a", with_pan, "ValueError: PropertyType")
    assert (outcome.reason, outcome.keep_payload) == (RejectReason.PAN_DETECTED, False)
    assert not pci.contains_pan(outcome.detail)

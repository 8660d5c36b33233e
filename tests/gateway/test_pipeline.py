import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.aggregates import DEVICE_MEASUREMENT
from gateway.config import GapsSection, TimestampsSection
from gateway.pipeline import (
    DEFAULT_GAPS,
    DEFAULT_TIMESTAMPS,
    Outcome,
    Pipeline,
    RejectReason,
    Verdict,
)
from testkit.factories import TS, next_status, payment, payment_json
from tests import strategies as s
from wire import messages as m
from wire import pci
from wire.points import to_line
from wire.timestamps import NS_PER_DAY, NS_PER_MS, NS_PER_S, iso
from wire.topics import device_topic

NOW = TS
TOPIC = device_topic("store-1", "pos-1", "payment")
PAN = "4111 1111 1111 1111"


def pipeline(
    gaps: GapsSection = DEFAULT_GAPS, timestamps: TimestampsSection = DEFAULT_TIMESTAMPS
) -> Pipeline:
    return Pipeline("gw1", NOW, gaps=gaps, timestamps=timestamps)


def send(p: Pipeline, doc: dict[str, object], topic: str = TOPIC) -> Outcome:
    return p.process(topic, json.dumps(doc).encode(), NOW)


def rejected(p: Pipeline) -> dict[str, int]:
    return {reason: n for reason, n in p.stats().rejected.items() if n}


@given(s.device_messages)
def test_every_valid_device_message_is_accepted_with_its_wire_line(
    message: m.DeviceMessage,
) -> None:
    p = pipeline()
    stream = m.STREAM_FOR_MESSAGE[type(message)]
    topic = device_topic(message.site, message.device, stream)
    outcome = p.process(topic, m.encode(message), message.ts)  # arriving as it is sent
    if outcome.reason is RejectReason.PAN_DETECTED:  # generated ids may hold a Luhn-valid run
        return
    assert outcome == Outcome(Verdict.ACCEPTED, to_line(message), stream)
    assert p.stats().accepted[stream.value] == 1


def test_a_redelivery_is_a_duplicate_still_carrying_its_line() -> None:
    p = pipeline()
    first = p.process(TOPIC, m.encode(payment()), NOW)
    again = p.process(TOPIC, m.encode(payment()), NOW)
    assert again.verdict is Verdict.DUPLICATE
    assert again.line == first.line  # spooled again: lands on the same InfluxDB point
    stats = p.stats()
    assert (stats.accepted["payment"], stats.duplicates["payment"]) == (1, 1)
    assert stats.aggregates.events == 1  # counted once in the aggregates


def test_device_state_is_never_deduplicated() -> None:
    p = pipeline()
    state = m.DeviceState(
        site="store-1", device="pos-1", ts=NOW, online=True, reason=m.StateReason.CONNECTED
    )
    topic = device_topic("store-1", "pos-1", "state")
    verdicts = [p.process(topic, m.encode(state), NOW).verdict for _ in range(2)]
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED]


def test_gaps_are_detected_from_the_sequence() -> None:
    p = pipeline()
    for seq in (1, 2, 5):
        p.process(TOPIC, m.encode(payment(seq=seq)), NOW)
    gaps = p.stats().gaps
    assert gaps is not None and gaps.missing == 2


def test_gap_detection_can_be_off() -> None:
    p = pipeline(gaps=GapsSection(enabled=False))
    p.process(TOPIC, m.encode(payment(seq=1)), NOW)
    assert p.stats().gaps is None


def health_sample(site: str, device: str, seq: int, ts: int) -> m.HostHealth:
    return m.HostHealth(
        site=site,
        device=device,
        ts=ts,
        seq=seq,
        cpu_temp_c=48.5,
        load1=0.4,
        mem_used_pct=31.0,
        disk_used_pct=12.0,
        clock_synced=True,
        outbox_depth=0,
        outbox_dropped=0,
    )


def test_an_agent_sharing_its_terminals_id_gets_no_false_gaps_and_loses_no_dedup_entry() -> None:
    """The defect: an edge agent's HostHealth counter and its terminal's counters under
    one (site, device). Each stream counts on its own (docs/wire.md), so the gateway must
    key gaps and dedup by (site, device, stream): no gaps, and every redelivered payment
    is still known (kept out of the aggregates), however the other streams number."""
    site, device = "s0001", "s0001-pos1"  # the Pi and its terminal share the id
    topics = {stream: device_topic(site, device, stream) for stream in ("payment", "status")}
    health_topic = device_topic(site, device, "health")
    p = pipeline()
    sent: list[tuple[str, bytes]] = []
    health = 100  # the agent has run for a while; its terminal was just replaced
    for seq in range(1, 61):
        ts = TS + seq * NS_PER_S
        sale = payment(site=site, device=device, seq=seq, ts=ts, txn_id=f"t{seq}")
        sent.append((topics["payment"], m.encode(sale)))
        if seq % 5 == 0:  # a heartbeat numbered by the terminal's status counter
            beat = msgspec.structs.replace(
                next_status(), site=site, device=device, seq=seq // 5, ts=ts + 1
            )
            sent.append((topics["status"], m.encode(beat)))
        if seq % 4 == 0:  # the agent's own sample, numbered by its health counter
            sent.append((health_topic, m.encode(health_sample(site, device, health, ts + 2))))
            health += 1
    first = [p.process(topic, payload, NOW).verdict for topic, payload in sent]
    again = [p.process(topic, payload, NOW).verdict for topic, payload in sent]  # QoS 1 resend

    assert set(first) == {Verdict.ACCEPTED}
    assert set(again) == {Verdict.DUPLICATE}  # no redelivery taken for a new event
    stats = p.stats()
    assert stats.aggregates.events == 60  # each payment counted once
    assert (stats.dedup.duplicates, stats.dedup.reused) == (len(sent), 0)
    gaps = stats.gaps
    assert gaps is not None
    assert (gaps.missing, gaps.repeated, gaps.stale, gaps.resets) == (0, 0, 0, 0)
    assert gaps.devices == 3 and gaps.top == []


def test_a_status_with_a_payments_seq_and_ts_is_not_a_duplicate() -> None:
    p = pipeline()
    sale = payment(seq=7)
    beat = msgspec.structs.replace(next_status(), seq=7, ts=sale.ts)
    assert p.process(TOPIC, m.encode(sale), NOW).verdict is Verdict.ACCEPTED
    status_topic = device_topic("store-1", "pos-1", "status")
    assert p.process(status_topic, m.encode(beat), NOW).verdict is Verdict.ACCEPTED


def test_tick_returns_the_closed_windows_lines() -> None:
    p = pipeline()
    p.process(TOPIC, m.encode(payment()), NOW)
    assert p.tick(NOW) == []
    lines = p.tick(NOW + 200 * NS_PER_S)
    assert any(line.startswith(f"{DEVICE_MEASUREMENT},") for line in lines)
    assert all("gateway=gw1" in line for line in lines)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "tp/v1/dev/store-1/pos-1",
        "tp/v1/dev/store-1/pos-1/payment/extra",
        "tp/v1/dev/store 1/pos-1/payment",
        "tp/v1/dev/store-1/pos-1/teleport",
        "tp/v1/dev/+/pos-1/payment",
        "tp/v2/dev/store-1/pos-1/payment",
        "tp/v1/dev/store-1/pos,x=1/payment",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    p = pipeline()
    outcome = p.process(topic, m.encode(payment()), NOW)
    assert (outcome.verdict, outcome.reason, outcome.line) == (
        Verdict.REJECTED,
        RejectReason.BAD_TOPIC,
        None,
    )
    assert outcome.keep_payload
    assert rejected(p) == {"bad_topic": 1}


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        (payment_json(seq="7"), "$.seq"),
        (payment_json(seq=-1), "$.seq"),
        (payment_json(amount_minor=1.5), "$.amount_minor"),
        (payment_json(approved="yes"), "$.approved"),
        (payment_json(auth_latency_ms=None), "$.auth_latency_ms"),
        (payment_json(txn_id='x" y=1,z'), "$.txn_id"),  # line-protocol injection
        (payment_json(txn_id="a\nmeasurement x=1"), "$.txn_id"),
        (payment_json(currency="E" * 100_000), "exceeds"),  # huge string, over the size limit
        (payment_json(currency="E" * 10_000), "$.currency"),
        (payment_json(schema="status/1"), "schema"),
        (payment_json(extra={"a": [[[]]]}), "extra"),
        ({"schema": "payment/1"}, "missing required field"),
    ],
)
def test_invalid_payloads_are_rejected_naming_the_field(doc: dict[str, object], named: str) -> None:
    p = pipeline()
    outcome = send(p, doc)
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECTED, RejectReason.DECODE_ERROR)
    assert named in outcome.detail
    assert outcome.keep_payload
    assert p.stats().aggregates.events == 0


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe\x00", b"[" * 16_000, b'{"a":' * 3000, b"null", b"[]", b"1e999999"],
)
def test_garbage_and_deep_json_are_rejected(payload: bytes) -> None:
    outcome = pipeline().process(TOPIC, payload, NOW)
    assert outcome.reason is RejectReason.DECODE_ERROR


def test_ids_must_match_the_topic() -> None:
    p = pipeline()
    outcome = send(p, payment_json(device="pos-2"))
    assert (outcome.reason, outcome.keep_payload) == (RejectReason.ID_MISMATCH, True)


@pytest.mark.parametrize("field", ["txn_id", "device", "acquirer", "mcc"])
def test_a_pan_is_rejected_and_never_kept_or_echoed(field: str) -> None:
    p = pipeline()
    digits = PAN.replace(" ", "")
    outcome = send(p, payment_json(**{field: digits}))
    assert (outcome.verdict, outcome.line) == (Verdict.REJECTED, None)
    assert outcome.reason in (RejectReason.PAN_DETECTED, RejectReason.DECODE_ERROR)
    assert digits not in outcome.detail and "4111" not in outcome.detail


def test_a_pan_in_a_valid_field_is_pan_detected() -> None:
    p = pipeline()
    outcome = send(p, payment_json(txn_id=PAN.replace(" ", "-")))
    assert (outcome.reason, outcome.keep_payload) == (RejectReason.PAN_DETECTED, False)
    assert "1111" not in outcome.detail
    assert rejected(p) == {"pan_detected": 1}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80), st.binary(max_size=2048))
def test_nothing_raises_out_of_process_for_any_topic_and_bytes(topic: str, payload: bytes) -> None:
    outcome = pipeline().process(topic, payload, NOW)
    assert outcome.verdict is Verdict.REJECTED


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(payment_json())),
    json_values,
    st.sampled_from(["payment", "status", "state", "sensor", "health"]),
)
def test_nothing_raises_for_a_payment_with_any_field_replaced(
    field: str, value: object, stream: str
) -> None:
    doc = payment_json(**{field: value})
    p = pipeline()
    outcome = p.process(device_topic("store-1", "pos-1", stream), msgspec.json.encode(doc), NOW)
    if outcome.verdict is Verdict.ACCEPTED:
        assert outcome.line is not None and "\n" not in outcome.line
        assert stream == "payment"
    else:
        assert outcome.reason is not None and outcome.detail
    p.tick(NOW + 10**12)


@pytest.mark.parametrize(
    ("topic", "doc"),
    [
        (TOPIC, payment_json(mcc="4111111111111111")),  # fails the field's pattern first
        (TOPIC, payment_json(amount_minor=4111111111111111)),  # a number, out of range
        (TOPIC, payment_json(pan="4111-1111-1111-1111")),  # an unknown field
        (TOPIC, {"4111111111111111": 1}),  # a key, echoed by the decoder's error
        (device_topic("4111111111111111", "pos-1", "payment"), payment_json()),  # id mismatch
        (device_topic("store-1", "pos-1", "payment") + "/4111111111111111", payment_json()),
    ],
)
def test_a_pan_anywhere_in_a_rejected_message_means_nothing_is_kept(
    topic: str, doc: dict[str, object]
) -> None:
    p = pipeline()
    outcome = send(p, doc, topic)
    assert (outcome.reason, outcome.keep_payload) == (RejectReason.PAN_DETECTED, False)
    assert "1111" not in outcome.detail
    assert rejected(p) == {"pan_detected": 1}


def test_a_nanosecond_ts_is_not_taken_for_a_card_number() -> None:
    luhn_valid_ts = next(t for t in range(TS, TS + 20) if pci.luhn_valid(str(t)))
    outcome = send(pipeline(), payment_json(ts=luhn_valid_ts, seq="x"))
    assert (outcome.reason, outcome.keep_payload) == (RejectReason.DECODE_ERROR, True)


def test_an_unexpected_failure_is_a_counted_rejection_kept_for_inspection() -> None:
    p = pipeline()
    payload = json.dumps(payment_json()).encode()
    outcome = p.process(TOPIC, payload, "a caller's bug")  # type: ignore[arg-type]
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECTED, RejectReason.INTERNAL_ERROR)
    assert outcome.keep_payload and outcome.detail.startswith("TypeError: ")
    assert rejected(p) == {"internal_error": 1}
    assert send(p, payment_json(seq=43)).verdict is Verdict.ACCEPTED  # and it goes on


# -- plausible event times (docs/wire.md, "Plausible time") ---------------------------

MINUTE = 60 * NS_PER_S
UNIT_MISTAKES = {
    "ms": (NOW // NS_PER_MS, "1970-01-01: looks like milliseconds", "x1,000,000"),
    "s": (NOW // NS_PER_S, "1970-01-01: looks like seconds", "x1,000,000,000"),
    "us": (NOW // 1000, "1970-01-21: looks like microseconds", "x1,000"),
}


@pytest.mark.parametrize(("ts", "looks", "factor"), UNIT_MISTAKES.values(), ids=UNIT_MISTAKES)
def test_a_ts_in_another_unit_is_rejected_naming_the_mistake(
    ts: int, looks: str, factor: str
) -> None:
    p = pipeline()
    outcome = send(p, payment_json(ts=ts))
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECTED, RejectReason.IMPLAUSIBLE_TIME)
    assert outcome.detail == f"ts {ts} is {looks}, ts is nanoseconds since the epoch ({factor})"
    assert outcome.keep_payload  # dead-lettered, for a look and a replay
    assert rejected(p) == {"implausible_time": 1}
    assert send(p, payment_json(seq=43)).verdict is Verdict.ACCEPTED  # the good ones go on


@pytest.mark.parametrize(
    ("age", "verdict"),
    [
        (29 * NS_PER_DAY, Verdict.ACCEPTED),  # an edge outbox replayed after a long outage
        (30 * NS_PER_DAY, Verdict.ACCEPTED),  # max_event_age itself
        (30 * NS_PER_DAY + 1, Verdict.REJECTED),
        (31 * NS_PER_DAY, Verdict.REJECTED),
    ],
)
def test_an_event_older_than_max_event_age_is_rejected(age: int, verdict: Verdict) -> None:
    outcome = send(pipeline(), payment_json(ts=NOW - age))
    assert outcome.verdict is verdict, outcome.detail


def test_the_age_rejection_says_how_old_and_the_limit() -> None:
    ts = NOW - 31 * NS_PER_DAY
    outcome = send(pipeline(), payment_json(ts=ts))
    assert outcome.reason is RejectReason.IMPLAUSIBLE_TIME
    assert outcome.detail == f"ts {ts} ({iso(ts)}) is 31 days old, more than max_event_age 30d"


@pytest.mark.parametrize(
    ("ahead", "verdict"),
    [
        (10 * MINUTE, Verdict.ACCEPTED),  # a skewed clock: raised as clock_skew downstream
        (60 * MINUTE, Verdict.ACCEPTED),
        (61 * MINUTE, Verdict.REJECTED),
    ],
)
def test_an_event_further_ahead_than_max_future_skew_is_rejected(
    ahead: int, verdict: Verdict
) -> None:
    ts = NOW + ahead
    outcome = send(pipeline(), payment_json(ts=ts))
    assert outcome.verdict is verdict, outcome.detail
    if verdict is Verdict.REJECTED:
        assert outcome.detail == (
            f"ts {ts} ({iso(ts)}) is 1.02 hours in the future, beyond max_future_skew 1h"
        )


def test_the_window_is_configured() -> None:
    p = pipeline(timestamps=TimestampsSection(max_event_age="400d", max_future_skew="1h"))
    assert send(p, payment_json(ts=NOW - 399 * NS_PER_DAY, seq=1)).verdict is Verdict.ACCEPTED
    assert send(p, payment_json(ts=NOW + 59 * MINUTE, seq=2)).verdict is Verdict.ACCEPTED
    old = send(p, payment_json(ts=NOW - 401 * NS_PER_DAY, seq=3))
    assert old.detail.endswith("is 401 days old, more than max_event_age 400d")
    ahead = send(p, payment_json(ts=NOW + 61 * MINUTE, seq=4))
    assert ahead.detail.endswith("is 1.02 hours in the future, beyond max_future_skew 1h")


def test_a_rejected_time_takes_no_part_in_dedup_gaps_or_aggregates() -> None:
    p = pipeline()
    assert send(p, payment_json(ts=NOW + 61 * MINUTE, seq=1)).verdict is Verdict.REJECTED
    assert send(p, payment_json(ts=NOW, seq=1)).verdict is Verdict.ACCEPTED  # not a duplicate
    stats = p.stats()
    assert stats.aggregates.events == 1 and stats.aggregates.future_events == 0


def state(ts: int) -> bytes:
    will = m.DeviceState(
        site="store-1", device="pos-1", ts=ts, online=False, reason=m.StateReason.LAST_WILL
    )
    return m.encode(will)


def test_a_state_has_no_age_limit_but_no_other_unit_nor_future() -> None:
    """A last will carries the time of the connect that registered it, months ago for
    a terminal that stayed connected; a retained state the time it was published."""
    p, topic = pipeline(), device_topic("store-1", "pos-1", "state")
    assert p.process(topic, state(NOW - 400 * NS_PER_DAY), NOW).verdict is Verdict.ACCEPTED
    in_ms = p.process(topic, state(NOW // NS_PER_MS), NOW)
    assert in_ms.detail.endswith(
        "looks like milliseconds, ts is nanoseconds since the epoch (x1,000,000)"
    )
    ahead = p.process(topic, state(NOW + 61 * MINUTE), NOW)
    assert ahead.detail.endswith("in the future, beyond max_future_skew 1h")
    assert rejected(p) == {"implausible_time": 2}

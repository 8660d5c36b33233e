"""The edge publisher against a real Mosquitto: bounded window, outages, order."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import EdgeMqttSection
from edge.outbox import Entry, Outbox, Priority, Row
from edge.publisher import MqttPublisher
from runtime.deadletters import DeadLetters
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, wait_until
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

SITE = "s0001"
DEVICE = "s0001-pos1"


class Running:
    """A publisher on its own thread, stopped (cleanly) at the end of the test."""

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher
        self.stop = threading.Event()
        self.thread = threading.Thread(target=publisher.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def mqtt_section(server: MosquittoServer, **overrides: object) -> EdgeMqttSection:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "inflight_window": 50,
    }
    settings.update(overrides)
    return msgspec.convert(settings, EdgeMqttSection)


def fill(outbox: Outbox, start: int, count: int, device: str = DEVICE) -> None:
    topic = device_topic(SITE, device, Stream.PAYMENT)
    entries = [
        Entry(topic, f"{device}:{seq}".encode(), Priority.HIGH, device, seq)
        for seq in range(start, start + count)
    ]
    for i in range(0, len(entries), 5_000):
        outbox.put_many(entries[i : i + 5_000])


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite3", max_in_flight=50, fsync_high_priority=False) as box:
        yield box


@pytest.fixture
def deadletters(tmp_path: Path) -> Iterator[DeadLetters]:
    store = DeadLetters(tmp_path / "deadletters")
    yield store
    store.close()


def start_publisher(
    server: MosquittoServer, outbox: Outbox, deadletters: DeadLetters, **overrides: object
) -> Running:
    return Running(
        MqttPublisher(
            mqtt_section(server, **overrides),
            site=SITE,
            device=DEVICE,
            outbox=outbox,
            deadletters=deadletters,
        )
    )


def first_occurrences(payloads: list[bytes]) -> list[bytes]:
    seen: set[bytes] = set()
    order = []
    for payload in payloads:
        if payload not in seen:
            seen.add(payload)
            order.append(payload)
    return order


@pytest.mark.slow
def test_a_backlog_of_100k_drains_completely_in_order(
    mosquitto: MosquittoServer, outbox: Outbox, deadletters: DeadLetters
) -> None:
    # DESIGN.md: paho stalled at ~65,700 when handed 65k+ queued QoS 1 messages.
    fill(outbox, 0, 100_000)
    with Collector(mosquitto.host, mosquitto.port, "tp/v1/dev/+/+/payment") as sub:
        running = start_publisher(mosquitto, outbox, deadletters)
        try:
            sub.wait_for_count(100_000, timeout=180)
            wait_until(lambda: outbox.stats().total_depth == 0, 30, message="outbox not empty")
            payloads = [p for _, p, _ in sub.snapshot()]
        finally:
            running.close()
    expected = [f"{DEVICE}:{seq}".encode() for seq in range(100_000)]
    assert first_occurrences(payloads) == expected
    assert running.publisher.status.acked == 100_000
    assert running.publisher.status.inflight == 0


def test_broker_outage_loses_nothing_and_keeps_order(
    mosquitto: MosquittoServer, outbox: Outbox, deadletters: DeadLetters
) -> None:
    topic_filter = "tp/v1/dev/+/+/payment"
    with Collector(
        mosquitto.host, mosquitto.port, topic_filter, client_id="sub-outage", session_expiry_s=300
    ) as sub:
        running = start_publisher(mosquitto, outbox, deadletters)
        try:
            fill(outbox, 0, 2_000)
            sub.wait_for_count(500)
            mosquitto.stop()  # mid-stream: some publishes are in flight
            fill(outbox, 2_000, 3_000)  # the agent keeps storing while the broker is away
            assert outbox.stats().total_depth > 0
            mosquitto.restart()
            wait_until(lambda: outbox.stats().total_depth == 0, 60, message="outbox not drained")
            wait_until(
                lambda: len({p for _, p, _ in sub.snapshot()}) >= 5_000,
                60,
                message=lambda: f"{len({p for _, p, _ in sub.snapshot()})} of 5000 distinct",
            )
        finally:
            running.close()
    payloads = [p for _, p, _ in sub.snapshot()]
    assert first_occurrences(payloads) == [f"{DEVICE}:{seq}".encode() for seq in range(5_000)]
    assert running.publisher.link.status.connects >= 2


def test_online_state_is_retained_and_a_clean_stop_says_shutdown(
    mosquitto: MosquittoServer, outbox: Outbox, deadletters: DeadLetters
) -> None:
    state_topic = device_topic(SITE, DEVICE, Stream.STATE)
    running = start_publisher(mosquitto, outbox, deadletters, keepalive_s=5)
    try:
        wait_until(lambda: running.publisher.link.status.connected, 10)
        with Collector(mosquitto.host, mosquitto.port, state_topic) as sub:
            sub.wait_for_count(1)
            _, payload, retained = sub.snapshot()[0]
            assert retained and msgspec.json.decode(payload)["online"] is True
    finally:
        running.close()
    # A clean stop says "shutdown"; the retained state is now offline.
    with Collector(mosquitto.host, mosquitto.port, state_topic) as sub:
        sub.wait_for_count(1)
        state = msgspec.json.decode(sub.snapshot()[0][1])
        assert state["online"] is False and state["reason"] == "shutdown"


class LeaseFailsOnce(Outbox):
    """The real outbox, whose first lease fails the way a bug would."""

    failed = False

    def lease(self, limit: int) -> list[Row]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in leasing")
        return super().lease(limit)


def test_an_unexpected_error_is_counted_and_publishing_goes_on(
    mosquitto: MosquittoServer, tmp_path: Path, deadletters: DeadLetters
) -> None:
    with LeaseFailsOnce(tmp_path / "outbox.sqlite3", fsync_high_priority=False) as box:
        fill(box, 0, 500)
        with Collector(mosquitto.host, mosquitto.port, "tp/v1/dev/+/+/payment") as sub:
            running = start_publisher(mosquitto, box, deadletters)
            try:
                sub.wait_for_count(500, timeout=30)
                wait_until(lambda: box.stats().total_depth == 0, 30, message="outbox not empty")
            finally:
                running.close()
    assert running.publisher.status.errors == 1 and running.publisher.status.acked == 500


def test_a_last_will_is_never_older_than_the_online_state_it_ends(
    mosquitto: MosquittoServer, outbox: Outbox, deadletters: DeadLetters
) -> None:
    """The cloud reads a will as the end of the connection whose "online" came before
    it; a will stamped when the agent started would be older than every later online."""
    clock = itertools.count(1_764_000_000 * 10**9, 10**9)  # one second per reading
    publisher = MqttPublisher(
        mqtt_section(mosquitto),
        site=SITE,
        device=DEVICE,
        outbox=outbox,
        deadletters=deadletters,
        now_ns=lambda: next(clock),
    )
    state_topic = device_topic(SITE, DEVICE, Stream.STATE)
    with Collector(mosquitto.host, mosquitto.port, state_topic) as sub:
        running = Running(publisher)
        try:
            sub.wait_for_count(1)  # online
            intruder = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5
            )
            intruder.connect(
                mosquitto.host, mosquitto.port
            )  # takes the session over: the will fires
            intruder.loop_start()
            sub.wait_for_count(2)
            intruder.loop_stop()
            intruder.disconnect()
        finally:
            running.close()
    states = [msgspec.json.decode(payload) for _, payload, _ in sub.snapshot()]
    online, will = states[0], states[1]
    assert online["online"] is True
    assert will["online"] is False and will["reason"] == "last-will"
    assert will["ts"] >= online["ts"]

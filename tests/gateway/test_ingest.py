"""The ingest against real Mosquitto (and influxd): no message can break the link."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import TimestampsSection
from gateway.ingest import Ingest
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from runtime.config_sections import LinkSettings
from runtime.deadletters import DeadLetters
from testkit.factories import payment
from testkit.mqtt_collector import publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, ServerFactory, wait_until
from tests.gateway import FIXED_PAST_MAX_AGE
from tests.gateway.test_service import DB, landed, payments, running_gateway, write_config
from tests.runtime.test_mqtt_safe import mosquitto_refuses
from wire.messages import encode
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

TOPIC = device_topic("store-0", "pos-000", Stream.PAYMENT)
FIXED_PAST = TimestampsSection(max_event_age=FIXED_PAST_MAX_AGE)  # for `payments`
VALID = encode(payment(site="store-0", device="pos-000"))


def with_field(key: str, value: object) -> bytes:
    doc = json.loads(VALID)
    doc[key] = value
    return json.dumps(doc).encode()


POISONS = {
    "newline-key": with_field("a\nb", 1),
    "schema-u0001": with_field("schema", "\u0001"),
    "nul-key": with_field("a\u0000b", 1),
    "invalid-utf8": VALID[:-1] + b', "x\xff\xfe": 1}',
    "200kb": with_field("firmware", "x" * 200_000),
    "lone-surrogate": VALID[:-1] + b', "\\udc80": 1, "k\\ud800": "\\udfff"}',
    "noncharacter-key": with_field("a\ufffeb\u0085", 1),
}


class DeadLetterTopic:
    """Subscribes to the dead-letter topics and keeps each message's user properties."""

    def __init__(self, mosquitto: MosquittoServer) -> None:
        self.received: list[dict[str, str]] = []  # each message's user properties
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("tp/v1/deadletter/#", qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(mosquitto.host, mosquitto.port)
        self._client.loop_start()
        wait_until(subscribed.is_set, 10, message="subscribed to the dead-letter topic")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(dict(getattr(msg.properties, "UserProperty", [])))
            self.payloads.append(bytes(msg.payload))

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def dead_letter_topic(mosquitto: MosquittoServer) -> Iterator[DeadLetterTopic]:
    topic = DeadLetterTopic(mosquitto)
    yield topic
    topic.close()


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_one_poison_payload_then_3000_valid_events_all_land_on_one_connection(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    dead_letter_topic: DeadLetterTopic,
    poison: bytes,
) -> None:
    influxdb.create_database(DB)
    with running_gateway(write_config(tmp_path, mosquitto, influxdb)) as gateway:
        publish_all(mosquitto.host, mosquitto.port, [(TOPIC, poison), *payments(3_000)])
        assert landed(influxdb, 3_000) == (3_000, 3_000)
        wait_until(lambda: gateway.ingest.stats.acked == 3_001, 30, message="all acked")
        wait_until(lambda: dead_letter_topic.count() >= 1, 10, message="dead-letter topic")
        stats, link = gateway.ingest.stats, gateway.ingest.link.status
        assert (stats.received, link.connects, link.connect_failures) == (3_001, 1, 0)
        assert gateway.deadletters.kept == 1
        [published] = dead_letter_topic.received
        gateway.refresh_metrics()
        exposed = gateway.metrics.render()
    for counter in ("deadletters_published", "deadletters_unpublished", "internal_errors"):
        assert f"# TYPE tillpulse_gateway_ingest_{counter}_total counter" in exposed
    assert (stats.deadletters_published, stats.deadletters_unpublished) == (1, 0)
    assert published["topic"] == TOPIC
    assert published["reason"].startswith("decode_error: ")
    assert not any(mosquitto_refuses(ord(c)) for c in published["reason"])
    [kept] = gateway.deadletters.read_all()
    assert kept.reason.startswith("decode_error: ") and kept.source == TOPIC


def test_the_reason_is_escaped_on_the_dead_letter_topic_not_dropped(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    dead_letter_topic: DeadLetterTopic,
) -> None:
    influxdb.create_database(DB)
    with running_gateway(write_config(tmp_path, mosquitto, influxdb)):
        publish_all(mosquitto.host, mosquitto.port, [(TOPIC, with_field("a\nb\u0000c", 1))])
        wait_until(lambda: dead_letter_topic.count() == 1, 10, message="dead-letter topic")
    assert "`a\\u000ab\\u0000c`" in dead_letter_topic.received[0]["reason"]


def test_a_dead_letter_larger_than_the_brokers_packet_limit_is_counted_not_sent(
    tmp_path: Path,
    mosquitto_factory: ServerFactory[MosquittoServer],
    influxdb: InfluxDB1Server,
) -> None:
    # The device's packet fits the broker's limit; the gateway's re-publish (a longer
    # topic plus the reason and topic properties) would not, and would cost the link.
    limit = 210_000
    broker = mosquitto_factory(extra_config=f"max_packet_size {limit}")
    device_packet_overhead = 1 + 3 + 2 + len(TOPIC) + 2 + 1
    poison = with_field("firmware", "x")
    poison = with_field("firmware", "x" * (limit - device_packet_overhead - len(poison) + 1))
    influxdb.create_database(DB)
    with running_gateway(write_config(tmp_path, broker, influxdb)) as gateway:
        publish_all(broker.host, broker.port, [(TOPIC, poison), *payments(1_000)])
        assert landed(influxdb, 1_000) == (1_000, 1_000)
        wait_until(lambda: gateway.ingest.stats.acked == 1_001, 30, message="all acked")
        stats = gateway.ingest.stats
        assert gateway.ingest.link.max_packet_bytes == limit
        assert gateway.ingest.link.status.connects == 1
    assert (stats.deadletters_published, stats.deadletters_unpublished) == (0, 1)
    assert gateway.deadletters.kept == 1


def test_a_redelivered_rejection_is_acked_and_not_kept_or_published_again(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    # The ingest reads the poison, but its PUBACK never leaves (no commit) before the
    # broker restarts: the broker redelivers it, with the dup flag, to the same session.
    deadletters = DeadLetters(tmp_path / "deadletters")
    spool = Spool(tmp_path / "spool")
    try:
        session = _ingest(mosquitto, spool, deadletters)  # a session, then offline
        _run_until(session, lambda: session.link.status.connected)
        publish_all(mosquitto.host, mosquitto.port, [(TOPIC, POISONS["newline-key"])])
        ingest = _ingest(mosquitto, spool, deadletters)
        wait_until(lambda: _turn_without_commit(ingest) == 1, 10, message="poison read")
        assert (ingest.stats.pending, deadletters.kept) == (1, 1)
        mosquitto.restart()
        # the redelivery is acked (the ack held from before the restart is never sent
        # on the new connection: it may have gone to the old socket as it closed)
        _run_until(
            ingest,
            lambda: ingest.stats.redelivered_rejections == 1 and ingest.stats.pending == 0,
        )
    finally:
        spool.close()
        deadletters.close()
    assert ingest.stats.received == 2 and ingest.stats.acked in (1, 2)
    assert deadletters.kept == 1 and ingest.stats.deadletters_published == 1
    assert ingest.link.status.connects == 2


class TickFailsOnce(Pipeline):
    """The real pipeline, whose first closing of aggregate windows fails as a bug would."""

    failed = False

    def tick(self, now_ns: int) -> list[str]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in closing windows")
        return super().tick(now_ns)


def test_an_unexpected_error_in_a_loop_turn_is_counted_and_the_ingest_goes_on(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    deadletters = DeadLetters(tmp_path / "deadletters")
    spool = Spool(tmp_path / "spool")
    try:
        ingest = _ingest(
            mosquitto,
            spool,
            deadletters,
            TickFailsOnce("gw1", time.time_ns(), timestamps=FIXED_PAST),
        )
        _run_until(ingest, lambda: ingest.link.status.connected)  # the session exists
        publish_all(mosquitto.host, mosquitto.port, payments(200))
        _run_until(ingest, lambda: ingest.stats.acked == 200)
    finally:
        spool.close()
        deadletters.close()
    assert ingest.stats.internal_errors == 1
    assert ingest.link.status.connects == 2  # its own two runs: the error cost no connection


def _ingest(
    mosquitto: MosquittoServer,
    spool: Spool,
    deadletters: DeadLetters,
    pipeline: Pipeline | None = None,
) -> Ingest:
    settings = LinkSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        client_id="gw1",
        keepalive_s=5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        receive_maximum=10,
    )
    return Ingest(
        settings,
        password=None,
        gateway="gw1",
        shared_group=None,
        pipeline=pipeline or Pipeline("gw1", time.time_ns(), timestamps=FIXED_PAST),
        spool=spool,
        deadletters=deadletters,
    )


def _turn_without_commit(ingest: Ingest) -> int:
    """One read of the ingest's link alone (so nothing is acked); messages received."""
    ingest.receive(threading.Event())
    return ingest.stats.received


def _run_until(ingest: Ingest, condition: Callable[[], bool]) -> None:
    """Run the ingest in its thread until ``condition``, then stop it (it disconnects)."""
    stop = threading.Event()
    runner = threading.Thread(target=ingest.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(condition, 20, message="the ingest got there")
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, filled up (Linux, as root)."""
    mount = tmp_path / "full"
    mount.mkdir()
    mount_tmpfs = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]
    if subprocess.run(mount_tmpfs, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass  # the disk is full: what we want
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_dead_letter_write_error_costs_neither_the_link_nor_the_acks(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    full_tmpfs: Path,
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb)
    (tmp_path / "gw1").mkdir()
    (tmp_path / "gw1" / "deadletters").symlink_to(full_tmpfs)
    poisons = [(TOPIC, with_field(f"unknown{n}", n)) for n in range(20)]
    with running_gateway(config) as gateway:
        publish_all(mosquitto.host, mosquitto.port, [*poisons, *payments(1_000)])
        assert landed(influxdb, 1_000) == (1_000, 1_000)
        wait_until(lambda: gateway.ingest.stats.acked == 1_020, 30, message="all acked")
        assert gateway.ingest.link.status.connects == 1
        assert gateway.ingest.stats.deadletters_published == 20
    assert (gateway.deadletters.kept, gateway.deadletters.lost) == (0, 20)


def test_a_backlog_larger_than_a_spool_segment_is_appended_in_chunks(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    """A burst of ``receive_maximum`` messages is one group: with 64 KiB segments it
    is several segments' worth, which one append refused (the ingest thread died)."""
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb, segment_bytes=64 << 10)
    with running_gateway(config):
        pass  # the session and its subscription exist: the backlog waits in it
    publish_all(mosquitto.host, mosquitto.port, payments(3_000))
    with running_gateway(config) as gateway:
        assert landed(influxdb, 3_000) == (3_000, 3_000)
        wait_until(lambda: gateway.ingest.stats.acked == 3_000, 30, message="all acked")
        assert gateway.ingest.broken is None
        assert gateway.spool.stats().appends > gateway.ingest.stats.groups


def test_messages_a_millisecond_apart_share_a_group_commit(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """At a moderate rate a read holds a message or two; a small group waits up to
    GROUP_LINGER_S for more, so they share an fsync and a PUBACK send."""
    spool = Spool(tmp_path / "spool")
    deadletters = DeadLetters(tmp_path / "deadletters")
    session = _ingest(mosquitto, spool, deadletters)  # the session and its subscription
    _run_until(session, lambda: session.link.status.connected)
    ingest = _ingest(mosquitto, spool, deadletters)  # receive_maximum 10: no wait past 5
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()

    def publish_spaced() -> None:
        wait_until(lambda: ingest.link.status.connected, 10, message="ingest connected")
        for _ in range(40):
            publisher.publish(TOPIC, VALID, qos=1)
            time.sleep(0.001)

    try:
        threading.Thread(target=publish_spaced, daemon=True).start()
        _run_until(ingest, lambda: ingest.stats.acked == 40)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        spool.close()
        deadletters.close()
    # one message a group without the wait: 20-22 here (a read holds one or two), 7-8 with it
    assert 4 <= ingest.stats.groups <= 14

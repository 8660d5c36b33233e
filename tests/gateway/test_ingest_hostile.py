"""What a device can send through Mosquitto 2.0.11 that a codec might choke on, ahead
of good traffic: the gateway's own MQTT link reads it all on one connection."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from testkit.factories import payment
from testkit.mqtt_collector import publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, wait_until
from tests.gateway.test_service import DB, landed, payments, running_gateway, write_config
from wire.messages import encode
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

TOPIC = device_topic("store-9", "pos-900", Stream.PAYMENT)


def valid(seq: int) -> bytes:
    return encode(payment(site="store-9", device="pos-900", seq=seq, txn_id=f"h{seq}"))


def props(**values: object) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


# (topic, payload, properties, lands): valid payments with every property a device may
# set (they land), and the largest topic and payload the broker takes (dead letters).
HOSTILE = [
    (TOPIC, valid(1) + b"\xff\xfe", props(PayloadFormatIndicator=1), False),
    (TOPIC, valid(2), props(PayloadFormatIndicator=1, ContentType="\ufeff\U0010fffd/x"), True),
    (TOPIC, valid(3), props(ResponseTopic="r/#/+", CorrelationData=b"\x00\xff" * 30_000), True),
    (TOPIC, valid(4), props(UserProperty=[("", "")] * 5_000 + [("k" * 30_000, "\ufffd")]), True),
    (TOPIC, valid(5), props(MessageExpiryInterval=1 << 31), True),
    (TOPIC.replace("/payment", "d" * (65_535 - len(TOPIC)) + "/payment"), valid(6), None, False),
    (TOPIC, b"\xff" * (8 << 20), None, False),  # 8 MiB: read in many chunks
]


def publish_hostile(mosquitto: MosquittoServer) -> None:
    """Publish every HOSTILE message at QoS 1; the broker must take each one."""
    acked: list[int] = []
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
    )

    def on_publish(*args: object) -> None:
        acked.append(1)
        if len(acked) == len(HOSTILE):
            done.set()

    client.on_publish = on_publish
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        for topic, payload, properties, _ in HOSTILE:
            client.publish(topic, payload, qos=1, properties=properties)
        wait_until(done.is_set, 20, message=lambda: f"{len(acked)} of {len(HOSTILE)} taken")
    finally:
        client.loop_stop()
        client.disconnect()


def test_hostile_packets_ahead_of_good_ones_cost_nothing_but_their_dead_letters(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    landing = sum(lands for *_, lands in HOSTILE)
    with running_gateway(write_config(tmp_path, mosquitto, influxdb)) as gateway:
        publish_hostile(mosquitto)
        publish_all(mosquitto.host, mosquitto.port, payments(1_000))
        total = len(HOSTILE) + 1_000
        assert landed(influxdb, 1_000 + landing) == (1_000 + landing, 1_000 + landing)
        wait_until(lambda: gateway.ingest.stats.acked == total, 30, message="all acked")
        stats, link = gateway.ingest.stats, gateway.ingest.link.status
        assert (stats.received, link.connects, link.connect_failures) == (total, 1, 0)
        assert stats.invalid_packets == 0 and stats.internal_errors == 0
        kept = gateway.deadletters.read_all()
    assert sorted(k.size for k in kept) == sorted(
        len(payload) for _, payload, _, lands in HOSTILE if not lands
    )
    assert stats.deadletters_published == len(kept)

"""runtime.mqtt_packets: packets out of any cut of the stream; a refused PUBLISH is
skipped by its length and handed back whole, never a stall or a lost neighbour."""

from __future__ import annotations

import mqtt5
import pytest

from runtime.mqtt_packets import Incoming, MqttProtocolError, PacketReader, RefusedPublish

Q1 = mqtt5.QoS.AT_LEAST_ONCE


def publish(packet_id: int, payload: bytes = b"{}") -> bytes:
    topic = f"tp/v1/dev/s/d{packet_id}/payment"
    return mqtt5.PublishPacket(topic, payload, qos=Q1, packet_id=packet_id).write()


def raw_publish(topic: bytes, packet_id: int, properties: bytes, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH (dup flag set) built by hand: what no codec would write."""
    body = len(topic).to_bytes(2) + topic + packet_id.to_bytes(2)
    body += bytes([len(properties)]) + properties + payload
    assert len(body) < 128  # a one-byte remaining length
    return bytes([0x3A, len(body)]) + body


def feed_in_chunks(data: bytes, size: int) -> list[Incoming]:
    reader = PacketReader()
    out: list[Incoming] = []
    for at in range(0, len(data), size):
        out += reader.feed(data[at : at + size])
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, 1000, 1 << 20])
def test_every_packet_comes_out_once_in_order_however_the_reads_cut_them(chunk: int) -> None:
    big = publish(9, b"x" * 300_000)  # longer than a read: gathered, not lost
    stream = b"".join([publish(n) for n in range(1, 9)]) + big + publish(10)
    packets = feed_in_chunks(stream, chunk)
    assert all(isinstance(p, mqtt5.PublishPacket) for p in packets)
    assert [getattr(p, "packet_id", None) for p in packets] == list(range(1, 11))
    assert getattr(packets[8], "payload", None) == b"x" * 300_000


REFUSED = {  # complete PUBLISHes mqtt5 0.8.0 refuses (Mosquitto 2.0.11 forwards none of them)
    "duplicate-property": (b"tp/a", b"\x01\x01\x01\x01", "Duplicate value"),
    "unknown-property": (b"tp/a", b"\x7f\x00", "PropertyType"),
    "topic-not-utf8": (b"tp/\xff", b"", "topic is not UTF-8"),  # the codec panics on it
}


# mqtt5 0.8.0 leaves the UnicodeDecodeError behind its panic as an "unraisable" one
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_publish_is_handed_back_whole_between_its_neighbours(
    case: tuple[bytes, bytes, str],
) -> None:
    topic, properties, error = case
    bad = raw_publish(topic, 77, properties, b"payload")
    for chunk in (1, 5, 1 << 20):
        first, refused, last = feed_in_chunks(publish(1) + bad + publish(2), chunk)
        assert isinstance(refused, RefusedPublish)
        assert (refused.packet_id, refused.qos, refused.duplicate) == (77, 1, True)
        assert refused.packet == bad and error in refused.error
        assert refused.topic == topic.decode("utf-8", "replace")
        assert isinstance(first, mqtt5.PublishPacket) and isinstance(last, mqtt5.PublishPacket)
        assert (first.packet_id, last.packet_id) == (1, 2)


def test_broken_framing_is_an_error_not_a_wait() -> None:
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_a_refused_packet_that_is_no_publish_ends_the_stream() -> None:
    with pytest.raises(MqttProtocolError, match="type 2"):  # a CONNACK with a bad property
        PacketReader().feed(b"\x20\x05\x00\x00\x02\x7f\x00")


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"\x00\x00", "type 0"),
        (b"\x40\x03\x00\x07\x01", "type 4"),  # a PUBACK with a reason code MQTT has not
        (b"\x40\xff\xff\xff\xff\x01", "longer than 4 bytes"),
    ],
    ids=["type-0", "bad-reason", "bad-length"],
)
def test_bytes_that_are_not_mqtt_v5_are_an_error_not_a_wait(garbage: bytes, error: str) -> None:
    puback = mqtt5.PubAckPacket(packet_id=1).write()
    with pytest.raises(MqttProtocolError, match=error):
        PacketReader().feed(puback + garbage)


def test_a_packet_larger_than_the_connection_takes_is_an_error_not_held() -> None:
    reader = PacketReader(max_packet_bytes=64)
    big = mqtt5.PublishPacket("t", b"x" * 200).write()
    with pytest.raises(MqttProtocolError, match="more than the 64"):
        reader.feed(big[:10])

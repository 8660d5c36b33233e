"""runtime.mqtt_safe: what Mosquitto refuses, measured on the real broker, is escaped."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.mqtt_safe import UnpublishableError, mqtt_text, publish
from testkit.servers import MosquittoServer, wait_until

# Boundaries of every class Mosquitto 2.0.11 refuses, and their neighbours it takes.
CODE_POINTS = [
    *(0x00, 0x01, 0x0A, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0x85, 0x9F, 0xA0),
    *(0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000),
    *(0xFDCF, 0xFDD0, 0xFDEF, 0xFDF0, 0xFFFD, 0xFFFE, 0xFFFF),
    *(0x10000, 0x1FFFD, 0x1FFFE, 0x1FFFF, 0x10FFFD, 0x10FFFE, 0x10FFFF),
]


def mosquitto_refuses(code: int) -> bool:
    """The rule as measured (and as Mosquitto's utf8_mosq.c states it)."""
    return (
        code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


class Probe:
    """One MQTT v5 client: did the broker acknowledge a QoS 1 publish, or drop us?"""

    def __init__(self, mosquitto: MosquittoServer) -> None:
        self.acked = threading.Event()
        self.dropped = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_publish = lambda c, u, mid, rc, p: self.acked.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        wait_until(connected.is_set, 10, message="probe connected")

    def outcome(self) -> str:
        wait_until(lambda: self.acked.is_set() or self.dropped.is_set(), 10, message="PUBACK")
        outcome = "dropped" if self.dropped.is_set() else "acked"
        self.client.loop_stop()
        self.client.disconnect()
        return outcome


@pytest.mark.integration
@pytest.mark.parametrize("code", CODE_POINTS, ids=[f"U+{c:04X}" for c in CODE_POINTS])
def test_mosquitto_refuses_exactly_what_mqtt_text_escapes(
    mosquitto_session: MosquittoServer, code: int
) -> None:
    char = chr(code)
    raw = Probe(mosquitto_session)  # the character as it is, UTF-8 (surrogates too)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("reason", f"a{char}b".encode("utf-8", "surrogatepass"))]
    raw.client.publish("t/probe", b"x", qos=1, properties=properties)
    assert raw.outcome() == ("dropped" if mosquitto_refuses(code) else "acked")
    assert (mqtt_text(char) != char) == mosquitto_refuses(code)

    safe = Probe(mosquitto_session)  # the same through mqtt_safe: the link survives
    publish(safe.client, "t/probe", b"x", qos=1, user_properties=[(f"k{char}", f"a{char}b")])
    assert safe.outcome() == "acked"


@given(st.text())
def test_mqtt_text_leaves_nothing_mosquitto_refuses_and_keeps_clean_text(text: str) -> None:
    safe = mqtt_text(text)
    assert not any(mosquitto_refuses(ord(c)) for c in safe)
    if not any(mosquitto_refuses(ord(c)) for c in text):
        assert safe == text


@given(st.text(), st.integers(min_value=0, max_value=64))
def test_mqtt_text_cuts_on_a_character_boundary_within_the_limit(text: str, limit: int) -> None:
    safe = mqtt_text(text, limit)
    encoded = safe.encode("utf-8")
    assert len(encoded) <= limit
    assert mqtt_text(text).encode("utf-8").startswith(encoded)


def test_refused_characters_are_escaped_not_dropped() -> None:
    assert mqtt_text("unknown field `a\nb\x00\x85\ud800\ufffe\U0010ffff`") == (
        "unknown field `a\\u000ab\\u0000\\u0085\\ud800\\ufffe\\U0010ffff`"
    )
    assert mqtt_text("é" * 10, 5) == "éé"


@pytest.mark.parametrize(
    "topic", ["", "tp/v1/+/x", "tp/#", "tp/a\nb", "tp/\x00", "tp/\ud800", "t" * 65_536]
)
def test_a_topic_brokers_refuse_is_not_rewritten_but_refused(topic: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    with pytest.raises(UnpublishableError):
        publish(client, topic, b"x", qos=0)


def test_a_packet_over_the_brokers_limit_is_refused_before_it_is_sent() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    with pytest.raises(UnpublishableError, match="exceeds the broker's 1000-byte limit"):
        publish(client, "t/a", b"x" * 990, qos=1, max_packet_bytes=1000)
    info = publish(client, "t/a", b"x" * 900, qos=0, max_packet_bytes=1000)
    assert info.rc == mqtt.MQTT_ERR_NO_CONN  # sent, as far as paho goes: not connected

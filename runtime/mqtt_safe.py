"""Valid MQTT out of any text: everything tillpulse publishes goes through `publish`.

Mosquitto drops the connection of a client that sends a malformed packet; with
manual acknowledgement the PUBACKs queued behind it are lost, the broker
redelivers the in-flight window and a poison message loops forever (DESIGN.md,
"Traps"). Mosquitto 2.0.11 refuses these in a topic and in a user property's
key or value (measured against the real broker, tests/runtime/test_mqtt_safe.py):

- control characters: U+0000-U+001F (C0, NUL included), U+007F (DEL),
  U+0080-U+009F (C1);
- surrogates U+D800-U+DFFF (a Python str can hold lone ones; paho cannot even
  encode them);
- non-characters: U+FDD0-U+FDEF and the last two code points of every plane
  (U+FFFE, U+FFFF, U+1FFFE, ... U+10FFFF);
- bytes that are not UTF-8 (overlong, truncated, past U+10FFFF): a str never
  holds those.

`mqtt_text` escapes each refused character as ``\\uXXXX`` (``\\UXXXXXXXX`` past
U+FFFF), so a reason stays readable and nothing is dropped, and truncates to a
byte limit on a character boundary. `safe_properties` makes a message's user
properties valid that way and checks the rest, whatever client will send it:
it never rewrites a topic (that would publish somewhere else), so an invalid
topic or a packet larger than the broker's maximum packet size raises
`UnpublishableError` for the caller to count and log. `publish` sends one
message that way with paho (the edge, the cloud); the gateway encodes its
dead letters with the mqtt5 codec (`gateway.broker_link`) after the same
checks. Whether the send then succeeded (``info.rc``, the PUBACK) stays the
caller's to check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MAX_STRING_BYTES: Final = 65_535  # an MQTT UTF-8 string has a 2-byte length prefix
MAX_PROPERTY_BYTES: Final = 1024  # user properties are labels: longer ones are cut
MAX_PACKET_BYTES: Final = 268_435_460  # 1 + a 4-byte remaining length of at most 268,435,455

_NONCHARACTERS: Final = "".join(
    chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)
)
_REFUSED: Final = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef{_NONCHARACTERS}]")


class UnpublishableError(Exception):
    """A message no broker would take as it is: nothing was sent."""


def mqtt_text(text: str, max_bytes: int = MAX_STRING_BYTES) -> str:
    """``text`` with every character Mosquitto refuses escaped, cut to ``max_bytes`` of UTF-8."""
    escaped = _REFUSED.sub(_escape, text)
    encoded = escaped.encode("utf-8")  # no surrogate is left to fail this
    if len(encoded) <= max_bytes:
        return escaped
    return encoded[:max_bytes].decode("utf-8", "ignore")  # drops a cut character's head only


def safe_properties(
    topic: str,
    payload: bytes,
    *,
    qos: int,
    user_properties: Sequence[tuple[str, str]] = (),
    max_packet_bytes: int | None = None,
) -> list[tuple[str, str]]:
    """``user_properties`` made valid; raise `UnpublishableError` if the message is
    still not one a broker takes (topic, size). ``max_packet_bytes`` is the broker's
    limit (CONNACK's Maximum Packet Size), if it announced one."""
    topic_bytes = _checked_topic(topic)
    properties = [
        (mqtt_text(key, MAX_PROPERTY_BYTES), mqtt_text(value, MAX_PROPERTY_BYTES))
        for key, value in user_properties
    ]
    size = _packet_bytes(topic_bytes, payload, qos, properties)
    limit = MAX_PACKET_BYTES if max_packet_bytes is None else max_packet_bytes
    if size > limit:
        raise UnpublishableError(f"a {size}-byte packet exceeds the broker's {limit}-byte limit")
    return properties


def publish(
    client: mqtt.Client,
    topic: str,
    payload: bytes,
    *,
    qos: int,
    user_properties: Sequence[tuple[str, str]] = (),
    max_packet_bytes: int | None = None,
) -> mqtt.MQTTMessageInfo:
    """Publish with paho after `safe_properties`; raise `UnpublishableError` instead of
    sending anything a broker would drop the connection for."""
    valid = safe_properties(
        topic, payload, qos=qos, user_properties=user_properties, max_packet_bytes=max_packet_bytes
    )
    properties: Properties | None = None
    if valid:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = valid
    try:
        return client.publish(topic, payload, qos=qos, properties=properties)
    except ValueError as exc:  # paho's own refusals: payload size, topic, QoS
        raise UnpublishableError(f"paho refused the message: {exc}") from exc


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _checked_topic(topic: str) -> bytes:
    """The topic's bytes, if a broker takes it as a PUBLISH topic as it is."""
    refused = _REFUSED.search(topic)
    if refused is not None:
        code = ord(refused.group())
        raise UnpublishableError(f"topic {mqtt_text(topic, 200)!r} holds U+{code:04X}")
    if not topic or "+" in topic or "#" in topic:
        raise UnpublishableError(f"topic {topic[:200]!r} is empty or holds a wildcard")
    encoded = topic.encode("utf-8")
    if len(encoded) > MAX_STRING_BYTES:
        raise UnpublishableError(f"topic of {len(encoded)} bytes exceeds {MAX_STRING_BYTES}")
    return encoded


def _packet_bytes(
    topic: bytes, payload: bytes, qos: int, user_properties: list[tuple[str, str]]
) -> int:
    """The size of the PUBLISH packet on the wire (MQTT v5)."""
    properties = sum(  # identifier, then two length-prefixed strings
        1 + 2 + len(key.encode()) + 2 + len(value.encode()) for key, value in user_properties
    )
    remaining = 2 + len(topic) + (2 if qos else 0) + _varint_bytes(properties) + properties
    remaining += len(payload)
    return 1 + _varint_bytes(remaining) + remaining


def _varint_bytes(value: int) -> int:
    """Bytes of ``value`` as an MQTT variable byte integer (7 bits a byte)."""
    length = 1
    while value >> 7 * length:
        length += 1
    return length

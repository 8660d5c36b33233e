"""The MQTT topic scheme.

    tp/v1/dev/{site}/{device}/{stream}   device data (edge agents, simulated fleets)
    tp/v1/alerts/{site}/{alert_type}     alerts from the cloud jobs
    tp/v1/deadletter/{gateway}           rejected payloads, re-published by gateways

Ids are validated before they are placed in a topic, so a hostile id (one with
``/``, ``+``, ``#``, ``$``, spaces, NUL...) can never widen a subscription or
address another device's topic: it is rejected with `InvalidIdError`.
"""

from __future__ import annotations

import enum
import re
from typing import Final

import msgspec

from wire.errors import InvalidIdError, TopicError

ROOT: Final = "tp/v1"
DEVICE_PREFIX: Final = f"{ROOT}/dev"
ALERTS_PREFIX: Final = f"{ROOT}/alerts"
DEADLETTER_PREFIX: Final = f"{ROOT}/deadletter"

ID_MAX_LEN: Final = 64
# Letters, digits, '_', '-', '.'; starting with a letter or digit. Safe in MQTT
# topics, InfluxDB tags, file names and URLs without any escaping.
ID_PATTERN: Final = r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
_ID_RE: Final = re.compile(ID_PATTERN)


class Stream(enum.StrEnum):
    """What a device publishes; each stream has one message type (wire.messages)."""

    PAYMENT = "payment"
    STATUS = "status"
    SENSOR = "sensor"
    STATE = "state"
    HEALTH = "health"


class DeviceTopic(msgspec.Struct, frozen=True, gc=False):  # strings only: never in a cycle
    site: str
    device: str
    stream: Stream


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid site/device/gateway id, else raise InvalidIdError."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not _ID_RE.match(value):
        raise InvalidIdError(
            f"{what} {value[:80]!r} is not a valid id: 1-{ID_MAX_LEN} characters of "
            "A-Z a-z 0-9 _ - . starting with a letter or digit"
        )
    return value


def device_topic(site: str, device: str, stream: Stream | str) -> str:
    """Build the topic a device publishes ``stream`` on."""
    return (
        f"{DEVICE_PREFIX}/{validate_id(site, 'site')}/{validate_id(device, 'device')}"
        f"/{_stream(stream)}"
    )


def parse_device_topic(topic: str) -> DeviceTopic:
    """Parse a device topic; raise TopicError for anything else."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != DEVICE_PREFIX:
        raise TopicError(f"not a device topic: {topic[:200]!r}")
    try:
        return DeviceTopic(
            site=validate_id(parts[3], "site"),
            device=validate_id(parts[4], "device"),
            stream=_stream(parts[5]),
        )
    except InvalidIdError as exc:
        raise TopicError(f"bad device topic {topic[:200]!r}: {exc}") from exc


def device_subscription(shared_group: str | None = None) -> str:
    """The filter that matches every device topic, optionally as an MQTT v5 shared subscription."""
    topic_filter = f"{DEVICE_PREFIX}/+/+/+"
    if shared_group is None:
        return topic_filter
    return f"$share/{validate_id(shared_group, 'shared subscription group')}/{topic_filter}"


# The site level of a fleet-wide alert's topic (an acquirer outage): "_" cannot
# start an id, so no site is ever called that.
FLEET_SCOPE: Final = "_fleet"


def alert_topic(site: str | None, alert_type: str) -> str:
    """``tp/v1/alerts/{site}/{type}``; a fleet-wide alert (no site) goes under ``_fleet``."""
    scope = FLEET_SCOPE if site is None else validate_id(site, "site")
    return f"{ALERTS_PREFIX}/{scope}/{validate_id(alert_type, 'alert type')}"


def deadletter_topic(gateway: str) -> str:
    return f"{DEADLETTER_PREFIX}/{validate_id(gateway, 'gateway')}"


# A dict lookup: calling the enum costs a gateway ~0.4 us on each topic it has not seen.
_STREAMS: Final = {stream.value: stream for stream in Stream}


def _stream(value: Stream | str) -> Stream:
    stream = _STREAMS.get(value) if isinstance(value, str) else None
    if stream is None:
        known = ", ".join(s.value for s in Stream)
        raise TopicError(f"unknown stream {str(value)[:40]!r} (known: {known})")
    return stream

"""One simulated device's MQTT v5 session, sans-I/O: bytes in, bytes out, no socket.

A device only publishes, at QoS 1, so its session is small: CONNECT (with the
retained last will), the CONNACK check, a queue of messages waiting for room in
the in-flight window, packet ids, the messages in flight until their PUBACK,
PINGREQ when the device has been quiet for the keepalive, DISCONNECT. What to
send accumulates in ``out``; the owner (firmware_sim.mqtt_fleet) writes it to
the socket when it likes, so a burst of publishes leaves in one ``send``, and
hands every chunk it reads to `receive`.

The messages in flight survive a lost connection (the session is persistent,
``clean_start`` off): after the next CONNACK they are sent again, DUP set when
the broker still has the session, before anything new. A PUBACK for a packet id
not in flight (acknowledged already, before a reconnect) changes nothing.

Codec: `mqtt5` (public API only); reading goes through
`runtime.mqtt_packets.PacketReader`.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Final

import mqtt5

from runtime.mqtt_packets import MqttProtocolError, PacketReader

MAX_PACKET_ID: Final = 65_535
MAX_RECEIVED_BYTES: Final = 65_536  # a publisher receives only small packets
FAILURE: Final = 0x80  # MQTT v5: reason codes from 0x80 up are failures
_QOS1: Final = mqtt5.QoS.AT_LEAST_ONCE
_PINGREQ: Final = mqtt5.PingReqPacket().write()
_DISCONNECT: Final = mqtt5.DisconnectPacket().write()


class ConnectRefused(Exception):
    """The broker answered CONNECT with a failure reason code."""

    def __init__(self, reason: mqtt5.ConnAckReasonCode) -> None:
        super().__init__(reason.name)
        self.reason = reason


class ClosedByBroker(Exception):
    """The broker sent DISCONNECT: it is closing the connection, for ``reason``."""

    def __init__(self, reason: mqtt5.DisconnectReasonCode) -> None:
        super().__init__(reason.name)
        self.reason = reason


class SessionTimeout(Exception):
    """No CONNACK, or no PINGRESP, within the time allowed."""


class Phase(Enum):
    OFFLINE = "offline"
    CONNECTING = "connecting"  # CONNECT written, no CONNACK yet
    ONLINE = "online"


def reason_text(reason: mqtt5.ConnAckReasonCode | mqtt5.DisconnectReasonCode) -> str:
    """``BAD_USER_NAME_OR_PASSWORD`` -> ``Bad user name or password``."""
    return reason.name.replace("_", " ").capitalize()


class PublisherSession:
    """A QoS 1 publisher's session: queue, in-flight window, packet ids, keepalive."""

    __slots__ = (
        "_client_id",
        "_inflight",
        "_last_id",
        "_last_out",
        "_password",
        "_ping_sent_at",
        "_reader",
        "_session_expiry_s",
        "_started_at",
        "_username",
        "_window",
        "connack_timeout_s",
        "keepalive_s",
        "out",
        "phase",
        "queue",
        "window",
    )

    def __init__(
        self,
        client_id: str,
        *,
        window: int,
        keepalive_s: int,
        session_expiry_s: int,
        connack_timeout_s: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._client_id = client_id
        self._username = username
        self._password = None if password is None else password.encode()
        self._session_expiry_s = session_expiry_s
        self._window = window
        self.window = window  # as the broker allows it (its Receive Maximum)
        self.keepalive_s = keepalive_s
        self.connack_timeout_s = connack_timeout_s
        self.out = bytearray()  # to send; the owner deletes what the socket took
        self.queue: deque[tuple[str, bytes, bool]] = deque()  # (topic, payload, retain)
        self.phase = Phase.OFFLINE
        self._inflight: dict[int, tuple[str, bytes, bool]] = {}  # packet id -> message
        self._last_id = 0
        self._reader = PacketReader(MAX_RECEIVED_BYTES)
        self._started_at = 0.0
        self._last_out = 0.0
        self._ping_sent_at: float | None = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing waiting for its PUBACK."""
        return not self.queue and not self._inflight

    # -- what the owner asks for -------------------------------------------------------

    def connect(self, will: mqtt5.Will, now: float) -> None:
        """Start a connection: CONNECT is all that goes out until the CONNACK."""
        self.out.clear()
        self._reader = PacketReader(MAX_RECEIVED_BYTES)
        self.phase = Phase.CONNECTING
        self._started_at = self._last_out = now
        self._ping_sent_at = None
        self.out += mqtt5.ConnectPacket(
            self._client_id,
            username=self._username,
            password=self._password,
            clean_start=False,
            will=will,
            keep_alive=self.keepalive_s,
            session_expiry_interval=self._session_expiry_s,
        ).write()

    def pump(self) -> int:
        """Publish from the queue while the window has room; returns how many."""
        if self.phase is not Phase.ONLINE:
            return 0
        queue = self.queue
        inflight = self._inflight
        out = self.out
        window = self.window
        published = 0
        while queue and len(inflight) < window:
            message = queue.popleft()
            packet_id = self._next_packet_id()
            inflight[packet_id] = message
            topic, payload, retain = message
            out += mqtt5.PublishPacket(
                topic, payload, qos=_QOS1, retain=retain, packet_id=packet_id
            ).write()
            published += 1
        return published

    def receive(self, data: bytes) -> tuple[int, int]:
        """Handle a chunk from the broker; returns (publishes acknowledged, refused).

        Raises ConnectRefused, ClosedByBroker, or MqttProtocolError for anything a
        publisher never receives."""
        acknowledged = refused = 0
        for packet in self._reader.feed(data):
            if isinstance(packet, mqtt5.PubAckPacket):
                if self._inflight.pop(packet.packet_id, None) is None:
                    continue
                # "no matching subscribers" (0x10) is a success in MQTT v5
                if packet.reason_code.value >= FAILURE:
                    refused += 1
                else:
                    acknowledged += 1
            elif isinstance(packet, mqtt5.ConnAckPacket):
                self._connack(packet)
            elif isinstance(packet, mqtt5.PingRespPacket):
                self._ping_sent_at = None
            elif isinstance(packet, mqtt5.DisconnectPacket):
                raise ClosedByBroker(packet.reason_code)
            else:
                raise MqttProtocolError(f"a publisher got an unexpected {type(packet).__name__}")
        return acknowledged, refused

    def sent(self, now: float) -> None:
        """The owner wrote bytes of ``out`` to the socket at ``now`` (for the keepalive)."""
        self._last_out = now

    def check_timers(self, now: float) -> None:
        """PINGREQ once nothing went out for the keepalive; SessionTimeout if the CONNACK
        or the PINGRESP is later than allowed."""
        if self.phase is Phase.CONNECTING:
            if now - self._started_at >= self.connack_timeout_s:
                raise SessionTimeout(f"no CONNACK in {self.connack_timeout_s:g}s")
        elif self.phase is Phase.ONLINE and self.keepalive_s:  # 0: the broker wants none
            if self._ping_sent_at is not None:
                if now - self._ping_sent_at >= self.keepalive_s:
                    raise SessionTimeout(f"no PINGRESP in {self.keepalive_s}s")
            elif now - self._last_out >= self.keepalive_s:
                self.out += _PINGREQ
                self._ping_sent_at = now

    def disconnect(self) -> None:
        """A normal DISCONNECT (the broker discards the will); the owner closes the
        socket once ``out`` is sent."""
        self.out += _DISCONNECT
        self.phase = Phase.OFFLINE

    def lost(self) -> None:
        """The connection is gone without DISCONNECT: what was not sent is dropped, what
        is in flight stays for the next connection."""
        self.out.clear()
        self.phase = Phase.OFFLINE

    # -- inside ------------------------------------------------------------------------

    def _connack(self, connack: mqtt5.ConnAckPacket) -> None:
        if self.phase is not Phase.CONNECTING:
            raise MqttProtocolError("a CONNACK outside of a connect")
        if connack.reason_code.value >= FAILURE:
            raise ConnectRefused(connack.reason_code)
        self.phase = Phase.ONLINE
        self.window = min(self._window, connack.receive_max)
        if connack.server_keep_alive is not None:  # the broker's word wins
            self.keepalive_s = connack.server_keep_alive
        for packet_id, (topic, payload, retain) in self._inflight.items():
            self.out += mqtt5.PublishPacket(
                topic,
                payload,
                qos=_QOS1,
                retain=retain,
                packet_id=packet_id,
                duplicate=connack.session_present,
            ).write()

    def _next_packet_id(self) -> int:
        # never more in flight than the Receive Maximum (<= 65,535): a free id exists
        packet_id = self._last_id
        while True:
            packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._inflight:
                self._last_id = packet_id
                return packet_id

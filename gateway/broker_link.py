"""The gateway's MQTT v5 subscription: its own socket, the mqtt5 codec, acks in bulk.

paho spent ~30 us of the ingest thread on each message (three or four
``recv`` calls per packet, an MQTTMessage and a Properties object, a
callback), half the gateway's CPU. This link reads what the broker sent in
chunks of up to ``CHUNK_BYTES`` (plus what TLS already decrypted), splits
every complete packet out of it (`runtime.mqtt_packets`, ~0.5 us a QoS 1
PUBLISH), hands the PUBLISHes of the whole read to the ingest as one batch,
and sends the PUBACKs of a committed group in one ``sendall``.

`BrokerLink.turn` is driven by the ingest thread alone, so nothing needs a
lock. What it keeps of MQTT:

- a persistent session (clean_start False, ``session_expiry_s``) and
  ``receive_maximum`` as flow control: the broker stops sending once that
  many messages wait for their PUBACK, and keeps the rest in our session;
- the subscription, sent after every CONNACK (a resumed session keeps it, a
  new one needs it); a SUBACK refusing it (an ACL, a shared subscription the
  broker does not support) is one error line naming the topic and the account;
- keepalive: a PINGREQ when nothing was sent for ``keepalive_s`` (or the
  server's Keep Alive), and the link is down if its PINGRESP does not come
  within as long again; a closed socket or a DISCONNECT from the broker (its
  reason logged; Mosquitto 2.0.11 sends none, it closes the socket of a
  session taken over) is a lost link;
- username/password and TLS (the broker verified against ``ca_file``, a client
  certificate for mutual TLS), a CONNACK failure with its reason;
- `ack` takes the connection the messages came on: the PUBACKs of a
  connection that is gone are not sent on the next one (the broker redelivers
  those messages, with the dup flag, and they are acknowledged then);
- `publish` (QoS 0, the dead letters) after `runtime.mqtt_safe.safe_properties`,
  within the broker's Maximum Packet Size from CONNACK (`max_packet_bytes`).

Status, backoff, flapping and the ``broker_*`` log lines are the shared
`runtime.link_state.LinkState`, as for the paho links of the edge and cloud.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from enum import IntEnum
from typing import Final

import mqtt5

from runtime import mqtt_safe
from runtime.config_sections import LinkSettings, TlsFiles
from runtime.link_state import LinkState, LinkStatus
from runtime.logs import kv
from runtime.mqtt_packets import MqttProtocolError, PacketReader, RefusedPublish

log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 1 << 18  # one recv: a whole burst of small messages
TURN_S: Final = 0.05  # how long one turn waits for the broker
CONNECT_TIMEOUT_S: Final = 10.0
REFUSED: Final = 0x80  # a reason code (its .value) at or above this is a failure

Delivery = mqtt5.PublishPacket | RefusedPublish


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """The broker verified against ``ca_file`` (and its host name); a client certificate
    for mutual TLS (raises OSError/SSLError for a file that can't be used)."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def reason_text(code: IntEnum, detail: str | None = None) -> str:
    """A reason code as people read it ("Not authorized"), with the broker's reason string."""
    text = code.name.replace("_", " ").capitalize()
    return text if detail is None else f"{text} ({detail})"


class BrokerLink:
    def __init__(
        self,
        settings: LinkSettings,
        *,
        password: str | None,
        subscription: str,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.state = LinkState(settings, rng=rng)
        self.max_packet_bytes: int | None = None  # the broker's, from the last CONNACK
        self.connection = 0  # CONNACKs so far: which connection a message came on
        self._subscription = subscription
        self._tls = None if settings.tls is None else tls_context(settings.tls)
        self._connect_packet = mqtt5.ConnectPacket(
            settings.client_id,
            username=settings.username,
            password=None if settings.username is None or password is None else password.encode(),
            clean_start=False,
            keep_alive=settings.keepalive_s,
            session_expiry_interval=settings.session_expiry_s,
            receive_max=settings.receive_maximum or 65_535,
        ).write()
        topic = mqtt5.TopicFilter(  # raises ValueError for an invalid filter, at start
            subscription, max_qos=mqtt5.QoS.AT_LEAST_ONCE, retain_as_published=False
        )
        self._subscribe_packet = mqtt5.SubscribePacket(1, [topic]).write()
        self._sock: socket.socket | None = None
        self._reader = PacketReader()
        self._keepalive_s = float(settings.keepalive_s)
        self._connack_deadline = 0.0
        self._last_sent = 0.0
        self._ping_sent: float | None = None
        self._session_present = False

    @property
    def status(self) -> LinkStatus:
        return self.state.status

    def flapping(self) -> str | None:
        """Why the link is unstable, if it connected too often lately; else None."""
        return self.state.flapping()

    def turn(self, stop: threading.Event, wait_s: float = TURN_S) -> list[Delivery]:
        """Connect if needed (after the backoff delay), then read what the broker sent
        within ``wait_s``: the PUBLISHes, in order (control packets are handled here)."""
        sock = self._sock or self._connect()
        if sock is None:
            stop.wait(self.state.next_delay())
            return []
        deliveries: list[Delivery] = []
        try:
            deliveries = self._read(sock, wait_s)
            self._keep_alive()
        except (OSError, MqttProtocolError) as exc:  # ssl.SSLError and timeouts are OSErrors
            self._lost(f"{type(exc).__name__}: {exc}")
        if self._sock is None:
            stop.wait(self.state.next_delay())
            return []
        return deliveries

    def ack(self, packet_ids: Sequence[int], connection: int) -> int:
        """PUBACK the messages ``packet_ids`` of ``connection`` in one send; how many
        were sent (none if that connection is gone: the broker redelivers them)."""
        if connection != self.connection or not self.status.connected or not packet_ids:
            return 0
        puback = mqtt5.PubAckPacket
        if self._send(b"".join([puback(packet_id).write() for packet_id in packet_ids])):
            return len(packet_ids)
        return 0

    def publish(
        self, topic: str, payload: bytes, user_properties: Sequence[tuple[str, str]]
    ) -> str | None:
        """Publish at QoS 0; None when sent, else why not (raises
        `mqtt_safe.UnpublishableError` for a message no broker would take as it is)."""
        properties = mqtt_safe.safe_properties(
            topic,
            payload,
            qos=0,
            user_properties=user_properties,
            max_packet_bytes=self.max_packet_bytes,
        )
        if not self.status.connected:
            return "not connected"
        packet = mqtt5.PublishPacket(topic, payload, user_properties=properties).write()
        return None if self._send(packet) else "the connection was lost"

    def close(self) -> None:
        """Say DISCONNECT (the session stays on the broker) and close the socket."""
        if self.status.connected and self._send(mqtt5.DisconnectPacket().write()):
            self.state.closed()
        self._drop()

    def _connect(self) -> socket.socket | None:
        """Open the connection and send CONNECT; None if the broker can't be reached."""
        address = (self.settings.host, self.settings.port)
        self._keepalive_s = float(self.settings.keepalive_s)  # until CONNACK says otherwise
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # acks go out at once
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.settings.host)
            # a send the broker does not take within this: the link is down
            sock.settimeout(self._keepalive_s or CONNECT_TIMEOUT_S)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self.state.down(f"{type(exc).__name__}: {exc}")
            return None
        try:
            sock.sendall(self._connect_packet)
        except OSError as exc:  # TLS 1.3: a refused client certificate can surface here
            sock.close()
            self.state.lost(f"{type(exc).__name__}: {exc}")  # "closed before CONNACK"
            return None
        self._sock = sock
        self._reader = PacketReader()
        self._last_sent = now = time.monotonic()
        self._connack_deadline = now + self._keepalive_s
        self._ping_sent = None
        return sock

    def _read(self, sock: socket.socket, wait_s: float) -> list[Delivery]:
        buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not buffered and not select.select([sock], [], [], wait_s)[0]:
            return []
        data = sock.recv(CHUNK_BYTES)
        if not data:
            raise ConnectionResetError("the broker closed the connection")
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            chunks = [data]  # TLS hands over one record a recv: take the rest it holds
            while sock.pending():
                chunks.append(sock.recv(CHUNK_BYTES))
            data = b"".join(chunks)
        deliveries: list[Delivery] = []
        for packet in self._reader.feed(data):
            if isinstance(packet, mqtt5.PublishPacket | RefusedPublish):
                deliveries.append(packet)
            else:
                self._control(packet)
            if self._sock is None:
                return []  # a CONNACK refused, a DISCONNECT: what followed is void
        return deliveries

    def _control(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.ConnAckPacket):
            self._connack(packet)
        elif isinstance(packet, mqtt5.SubAckPacket):
            self._suback(packet)
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, mqtt5.DisconnectPacket):
            self._lost(f"disconnected: {reason_text(packet.reason_code, packet.reason_str)}")

    def _connack(self, connack: mqtt5.ConnAckPacket) -> None:
        if connack.reason_code.value >= REFUSED:
            self._drop()
            self.state.down(f"CONNACK {reason_text(connack.reason_code, connack.reason_str)}")
            return
        self.connection += 1
        self.max_packet_bytes = connack.max_packet_size
        if connack.server_keep_alive is not None:  # the server's wins (MQTT v5 3.2.2.3.14)
            self._keepalive_s = float(connack.server_keep_alive)
        self._session_present = connack.session_present
        self.state.connected(connack.session_present)
        self._send(self._subscribe_packet)

    def _suback(self, suback: mqtt5.SubAckPacket) -> None:
        [code] = suback.reason_codes
        if code.value >= REFUSED:  # Mosquitto 2.0.11 grants even what its ACL denies
            log.error(
                "subscription_refused",
                extra=kv(
                    topic=self._subscription,
                    username=self.settings.username,
                    reason=reason_text(code, suback.reason_str),
                    fix="let this account read the device topics in the broker's ACL",
                ),
            )
        else:
            log.info(
                "subscribed", extra=kv(topic=self._subscription, resumed=self._session_present)
            )

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if not self.status.connected:
            if self._sock is not None and now > self._connack_deadline:
                self._drop()
                self.state.down("no CONNACK in time")
        elif self._ping_sent is not None:
            if now - self._ping_sent > self._keepalive_s:
                self._lost(f"no PINGRESP within {self._keepalive_s:.0f}s")
        elif self._keepalive_s and now - self._last_sent >= self._keepalive_s:
            self._ping_sent = now
            self._send(mqtt5.PingReqPacket().write())

    def _send(self, data: bytes) -> bool:
        """Send ``data`` whole; False (and the link down) if the connection failed."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendall(data)
        except OSError as exc:
            self._lost(f"{type(exc).__name__}: {exc}")
            return False
        self._last_sent = time.monotonic()
        return True

    def _lost(self, detail: str) -> None:
        if self._sock is not None:
            self._drop()
            self.state.lost(detail)

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

"""One MQTT v5 connection, kept up: connect, reconnect with backoff, report its state.

Both the edge publisher and the gateway ingest drive paho-mqtt's network loop
themselves, one `MqttLink.turn` at a time in their own thread, so paho's
callbacks run in that thread and their bookkeeping needs no lock.

The session is persistent (clean_start False, a session expiry), so the
broker keeps QoS 1 messages for us while we are away, and paho re-sends our
unacknowledged publishes after a reconnect. The bookkeeping every link of
ours shares (`LinkStatus`, backoff, flapping, the ``broker_*`` log lines) is
`runtime.link_state.LinkState`: a link never gives up, every failure is
logged and counted, and `MqttLink.flapping` says why a link that keeps
reconnecting is not healthy. `MqttLink.max_packet_bytes` is the broker's
Maximum Packet Size from the last CONNACK (None: no limit announced), for
`runtime.mqtt_safe.publish`.
"""

from __future__ import annotations

import random
import select
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.config_sections import LinkSettings, TlsFiles
from runtime.link_state import LinkState, LinkStatus

TURN_S = 0.05  # how long one turn waits for network activity


def configure_tls(client: mqtt.Client, tls: TlsFiles) -> None:
    """TLS (server verified against ``ca_file``; a client certificate for mutual TLS)."""
    client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)


class MqttLink:
    def __init__(
        self,
        settings: LinkSettings,
        *,
        password: str | None = None,
        will: Callable[[], tuple[str, bytes]] | None = None,  # see _start_connect
        manual_ack: bool = False,
        on_connected: Callable[[mqtt.Client, bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.state = LinkState(settings, rng=rng)
        self._on_connected = on_connected
        self._will = will
        self._connect_started = False
        self._closing = False  # our own DISCONNECT: not a lost link
        self._must_connect = True
        self._connack_deadline = 0.0
        self.max_packet_bytes: int | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        self.client.max_inflight_messages_set(settings.max_inflight)
        if settings.username is not None:
            self.client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            configure_tls(self.client, settings.tls)
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect

    @property
    def status(self) -> LinkStatus:
        return self.state.status

    def turn(self, stop: threading.Event, read_burst: int = 1) -> bool:
        """Connect if needed (after the backoff delay), then run paho's loop once.

        paho's loop reads one inbound QoS 1 packet per call; ``read_burst`` > 1
        goes on reading, up to that many packets, while more are waiting, so a
        subscriber can handle (and group-commit) a burst in one turn. Returns
        True when the link is up after the turn.
        """
        if self._must_connect and not self._start_connect():
            stop.wait(self.state.next_delay())
            return False
        rc = self.client.loop(timeout=TURN_S)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and read_burst > 1:
            rc = self._read_waiting(read_burst - 1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._must_connect:
            self._connection_lost(f"network loop: {mqtt.error_string(rc)}")
        elif (
            not self._must_connect
            and not self.status.connected
            and time.monotonic() > self._connack_deadline
        ):
            self._link_down("no CONNACK in time")
        if self._must_connect:
            stop.wait(self.state.next_delay())
        return self.status.connected

    def flapping(self) -> str | None:
        """Why the link is unstable, if it connected too often lately; else None."""
        return self.state.flapping()

    def _read_waiting(self, limit: int) -> MQTTErrorCode:
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(limit):
            sock = self.client.socket()
            if sock is None:
                break
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not buffered and not select.select([sock], [], [], 0)[0]:
                break
            rc = self.client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        return rc

    def close(self, flush: Callable[[], bool] | None = None, timeout_s: float = 2.0) -> None:
        """Run the loop until ``flush()`` is true (or the timeout), then disconnect."""
        if self.client.is_connected():
            deadline = time.monotonic() + timeout_s
            while flush is not None and not flush() and time.monotonic() < deadline:
                self.client.loop(timeout=TURN_S)
            self._closing = True
            self.client.disconnect()
            self.client.loop(timeout=TURN_S)

    def _start_connect(self) -> bool:
        """Open the connection and send CONNECT; False if the broker can't be reached."""
        self._closing = False
        if self._will is not None:
            # Asked again before every connect, so the will can carry the time of
            # the connection it belongs to (retained, QoS 1).
            topic, payload = self._will()
            self.client.will_set(topic, payload, qos=1, retain=True)
        try:
            if self._connect_started:
                self.client.reconnect()
            else:
                self._connect_started = True
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = self.settings.session_expiry_s
                if self.settings.receive_maximum is not None:
                    properties.ReceiveMaximum = self.settings.receive_maximum
                self.client.connect(
                    self.settings.host,
                    self.settings.port,
                    keepalive=self.settings.keepalive_s,
                    clean_start=False,
                    properties=properties,
                )
        except (OSError, ssl.SSLError) as exc:
            self._link_down(f"{type(exc).__name__}: {exc}")
            return False
        self._must_connect = False
        self._connack_deadline = time.monotonic() + self.settings.keepalive_s
        return True

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._link_down(f"CONNACK {reason}")
            return
        self.max_packet_bytes = getattr(properties, "MaximumPacketSize", None)
        self.state.connected(flags.session_present)
        if self._on_connected is not None:
            self._on_connected(client, flags.session_present)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._closing:
            self._must_connect = True
            self.state.closed()
        elif not self._must_connect:
            self._connection_lost(f"disconnected: {reason}")

    def _connection_lost(self, detail: str) -> None:
        self._must_connect = True
        self.state.lost(detail)

    def _link_down(self, error: str) -> None:
        """The connection is gone or never came up: reconnect after a backoff delay."""
        self._must_connect = True
        self.state.down(error)

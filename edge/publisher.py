"""The MQTT side of the edge agent: outbox rows -> broker, one bounded window at a time.

One thread runs `MqttPublisher.run`: it drives paho-mqtt's network loop
itself (``client.loop``), so paho's callbacks run in this thread and no lock
is needed around the in-flight bookkeeping. Each turn it tops the in-flight
window up from the outbox: at most ``inflight_window`` QoS 1 publishes are
unacknowledged at any time, so paho never holds a backlog (DESIGN.md: a paho
client handed ~65,000 queued QoS 1 messages stalled silently). A row leaves
the outbox only when its PUBACK arrives.

Connection: MQTT v5, client id = the agent's device id, a persistent session
(clean_start False, session expiry from the config), a retained last will
"offline" on the device's state topic and a retained "online" after every
CONNACK. Publishes in flight when the link drops are re-sent by paho on
reconnect (DUP set); after a crash they are leased again from the outbox.
Either way the gateway sees at most a redelivery of the same event.

Reconnects back off exponentially from ``reconnect_min_s`` to
``reconnect_max_s`` with jitter (each delay is drawn from the upper half of
the current step). The agent never gives up on the broker: the loop is bounded
in delay, not in attempts, and every attempt is logged.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttSection
from tillpulse.logs import kv
from wire.messages import DeviceState, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)


class OutboxRow(Protocol):
    @property
    def row_id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class Outbox(Protocol):
    """What the publisher needs of edge.outbox.Outbox."""

    def lease(self, limit: int) -> list[Any]: ...
    def ack_many(self, row_ids: list[int]) -> int: ...
    def defer(self, row_ids: list[int]) -> int: ...


class LinkStatus(msgspec.Struct, kw_only=True):
    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0  # PUBACK with a failure reason (e.g. not authorised): row kept
    inflight: int = 0
    last_ack_unix: float | None = None
    last_error: str | None = None


class MqttPublisher:
    def __init__(
        self,
        config: MqttSection,
        *,
        site: str,
        device: str,
        outbox: Outbox,
        password: str | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._site = site
        self._device = device
        self._outbox = outbox
        self._now_ns = now_ns
        self._rng = rng or random.Random()
        self.status = LinkStatus()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._delivered: list[int] = []  # row ids whose PUBACK arrived this turn
        self._attempt = 0
        self._connect_started = False
        self._must_connect = True
        self._connack_deadline = 0.0
        self._state_topic = device_topic(site, device, Stream.STATE)
        self._client = self._make_client(password)

    # -- the loop ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; then say "offline" and disconnect cleanly."""
        while not stop.is_set():
            if self._must_connect and not self._start_connect():
                stop.wait(self._next_delay())
                continue
            rc = self._client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._must_connect:
                self._connection_lost(f"network loop: {mqtt.error_string(rc)}")
            elif (
                not self._must_connect
                and not self.status.connected
                and time.monotonic() > self._connack_deadline
            ):
                self._link_down("no CONNACK in time")
            self._ack_delivered()
            if self.status.connected:
                self._fill_window()
            elif self._must_connect:
                stop.wait(self._next_delay())
        self._shutdown()

    def _start_connect(self) -> bool:
        """Open the connection and send CONNECT; False if the broker can't be reached."""
        try:
            if self._connect_started:
                self._client.reconnect()
            else:
                self._connect_started = True
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = self._config.session_expiry_s
                self._client.connect(
                    self._config.host,
                    self._config.port,
                    keepalive=self._config.keepalive_s,
                    clean_start=False,
                    properties=properties,
                )
        except (OSError, ssl.SSLError) as exc:
            self._link_down(f"{type(exc).__name__}: {exc}")
            return False
        self._must_connect = False
        self._connack_deadline = time.monotonic() + self._config.keepalive_s
        return True

    def _fill_window(self) -> None:
        room = self._config.inflight_window - len(self._inflight)
        if room <= 0:
            return
        for row in self._outbox.lease(room):
            info = self._client.publish(row.topic, row.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Queued inside paho and sent on reconnect: still tracked by mid.
                log.warning("publish_deferred", extra=kv(topic=row.topic, rc=int(info.rc)))
            self._inflight[info.mid] = row.row_id
            self.status.published += 1
        self.status.inflight = len(self._inflight)

    def _next_delay(self) -> float:
        step = min(
            self._config.reconnect_max_s, self._config.reconnect_min_s * 2 ** min(self._attempt, 30)
        )
        self._attempt += 1
        return float(step / 2 + self._rng.uniform(0, step / 2))

    def _shutdown(self) -> None:
        if self._client.is_connected():
            info = self._client.publish(
                self._state_topic, self._state(False, StateReason.SHUTDOWN), qos=1, retain=True
            )
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline:
                self._client.loop(timeout=0.05)
            self._client.disconnect()
            self._client.loop(timeout=0.05)
            self._ack_delivered()
        log.info("publisher_stopped", extra=kv(inflight=len(self._inflight)))

    # -- paho callbacks (run inside client.loop, in this thread) ------------------

    def _on_connect(
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
        self._attempt = 0
        self.status.connected = True
        self.status.connects += 1
        client.publish(
            self._state_topic, self._state(True, StateReason.CONNECTED), qos=1, retain=True
        )
        log.info(
            "broker_connected",
            extra=kv(
                host=self._config.host,
                port=self._config.port,
                session_present=flags.session_present,
                inflight=len(self._inflight),
            ),
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._must_connect:
            self._connection_lost(f"disconnected: {reason}")

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        row_id = self._inflight.pop(mid, None)
        self.status.inflight = len(self._inflight)
        if row_id is None:
            return  # our own state message
        if reason.is_failure:
            # The broker refused it (ACL, quota): keep the row, out of the window, to
            # be sent again after a restart; a payment is never dropped on the
            # broker's word, and a refused row must not hold a window slot forever.
            self.status.rejected += 1
            self._outbox.defer([row_id])
            log.error("publish_rejected", extra=kv(row_id=row_id, reason=str(reason)))
            return
        self._delivered.append(row_id)

    def _ack_delivered(self) -> None:
        """Delete this turn's delivered rows in one outbox transaction."""
        if self._delivered:
            self._outbox.ack_many(self._delivered)
            self.status.acked += len(self._delivered)
            self.status.last_ack_unix = time.time()
            self._delivered = []

    # -- helpers ------------------------------------------------------------------

    def _connection_lost(self, detail: str) -> None:
        if self.status.connected:
            self._link_down(detail)
        else:
            self._link_down(
                "the broker closed the connection before CONNACK (a refused TLS client"
                f" certificate or protocol; the broker's log has the reason): {detail}"
            )

    def _link_down(self, error: str) -> None:
        """The connection is gone or never came up: reconnect after a backoff delay."""
        was_connected = self.status.connected
        self.status.connected = False
        self._must_connect = True
        self.status.last_error = error
        if not was_connected:
            self.status.connect_failures += 1
        log.warning(
            "broker_lost" if was_connected else "broker_connect_failed",
            extra=kv(
                host=self._config.host,
                port=self._config.port,
                error=error,
                inflight=len(self._inflight),
            ),
        )

    def _state(self, online: bool, reason: StateReason) -> bytes:
        return encode(
            DeviceState(
                site=self._site,
                device=self._device,
                ts=self._now_ns(),
                online=online,
                reason=reason,
            )
        )

    def _make_client(self, password: str | None) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._device, protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(self._config.inflight_window)
        client.will_set(
            self._state_topic, self._state(False, StateReason.LAST_WILL), qos=1, retain=True
        )
        if self._config.username is not None:
            client.username_pw_set(self._config.username, password)
        tls = self._config.tls
        if tls is not None:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

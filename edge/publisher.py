"""The MQTT side of the edge agent: outbox rows -> broker, one bounded window at a time.

One thread runs `MqttPublisher.run`, turning the `MqttLink` (connection,
reconnects with backoff, persistent session) and, between turns, topping the
in-flight window up from the outbox: at most ``inflight_window`` QoS 1
publishes are unacknowledged at any time, so paho never holds a backlog
(DESIGN.md: a paho client handed ~65,000 queued QoS 1 messages stalled
silently). A row leaves the outbox only when its PUBACK arrived (the acks of
one turn are deleted in one transaction).

The link's client id is the agent's device id; its retained last will says
"offline" on the device's state topic, and a retained "online" follows every
CONNACK; both carry the time of that connect (docs/wire.md, "Timing").
Publishes in flight when the link drops are re-sent by paho on reconnect (DUP
set); after a crash they are leased again from the outbox.
Either way the gateway sees at most a redelivery of the same event.

An outbox that fails (full disk: an ack cannot be stored) does not stop the
publisher: it keeps the acks, keeps the link, and tries the outbox again
with backoff. The rows behind those acks stay leased, so they are not
published twice by this run, and the window (and paho's queue) stays bounded.
Anything unexpected in a turn (a bug) is logged, counted in ``errors`` and
treated the same way: the thread goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import EdgeMqttSection
from edge.errors import OutboxError
from runtime.backoff import Backoff
from runtime.logs import kv
from runtime.mqtt_link import MqttLink
from wire.messages import DeviceState, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

OUTBOX_RETRY_MIN_S = 0.5
OUTBOX_RETRY_MAX_S = 10.0


class Outbox(Protocol):
    """What the publisher needs of edge.outbox.Outbox."""

    def lease(self, limit: int) -> list[Any]: ...
    def ack_many(self, row_ids: list[int]) -> int: ...
    def defer(self, row_ids: list[int]) -> int: ...


class PublishStatus(msgspec.Struct, kw_only=True):
    published: int = 0
    acked: int = 0
    rejected: int = 0  # PUBACK with a failure reason (e.g. not authorised): row kept
    inflight: int = 0
    errors: int = 0  # unexpected failures of a turn: logged, retried with backoff
    last_ack_unix: float | None = None


class MqttPublisher:
    def __init__(
        self,
        config: EdgeMqttSection,
        *,
        site: str,
        device: str,
        outbox: Outbox,
        password: str | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._window = config.inflight_window
        self._site = site
        self._device = device
        self._outbox = outbox
        self._now_ns = now_ns
        self._connect_ns = now_ns()  # of the latest connect; set again before each
        self.status = PublishStatus()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._delivered: list[int] = []  # row ids whose PUBACK arrived, not yet acked
        self._outbox_backoff = Backoff(OUTBOX_RETRY_MIN_S, OUTBOX_RETRY_MAX_S)
        self._outbox_retry_at = 0.0  # monotonic; after a failed outbox call
        self._state_topic = device_topic(site, device, Stream.STATE)
        self.link = MqttLink(
            config.link_settings(device, max_inflight=config.inflight_window),
            password=password,
            will=self._will_for_next_connect,
            on_connected=self._say_online,
        )
        self.link.client.on_publish = self._on_publish

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; then say "offline" and disconnect cleanly."""
        while not stop.is_set():
            try:
                self._turn(stop)
            except Exception as exc:  # last resort: log, count, go on after a pause
                self.status.errors += 1
                log.error(
                    "publisher_unexpected_error",
                    extra=kv(error=f"{type(exc).__name__}: {exc}"),
                    exc_info=True,
                )
                self._outbox_retry_at = time.monotonic() + self._outbox_backoff.next_delay()
        self._shutdown()

    def _turn(self, stop: threading.Event) -> None:
        connected = self.link.turn(stop)
        if time.monotonic() < self._outbox_retry_at:
            return
        try:
            self._ack_delivered()
            if connected:
                self._fill_window()
        except OutboxError as exc:
            self._outbox_failed(exc)
        else:
            self._outbox_backoff.reset()

    def _outbox_failed(self, exc: OutboxError) -> None:
        """Try the outbox again later (the acks are kept); log once per outage."""
        if self._outbox_backoff.attempt == 0:
            log.warning(
                "outbox_unavailable", extra=kv(error=str(exc), acks_pending=len(self._delivered))
            )
        self._outbox_retry_at = time.monotonic() + self._outbox_backoff.next_delay()

    def _fill_window(self) -> None:
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for row in self._outbox.lease(room):
            info = self.link.client.publish(row.topic, row.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Queued inside paho and sent on reconnect: still tracked by mid.
                log.warning("publish_deferred", extra=kv(topic=row.topic, rc=int(info.rc)))
            self._inflight[info.mid] = row.row_id
            self.status.published += 1
        self.status.inflight = len(self._inflight)

    def _ack_delivered(self) -> None:
        """Delete the delivered rows in one outbox transaction; kept on `OutboxError`."""
        if self._delivered:
            self._outbox.ack_many(self._delivered)
            self.status.acked += len(self._delivered)
            self.status.last_ack_unix = time.time()
            self._delivered = []

    def _shutdown(self) -> None:
        if self.link.client.is_connected():
            info = self.link.client.publish(
                self._state_topic, self._state(False, StateReason.SHUTDOWN), qos=1, retain=True
            )
            self.link.close(flush=info.is_published)
        try:
            self._ack_delivered()
        except OutboxError as exc:  # delivered again after the restart: at-least-once
            log.warning("acks_not_stored", extra=kv(rows=len(self._delivered), error=str(exc)))
        log.info("publisher_stopped", extra=kv(inflight=len(self._inflight)))

    def _will_for_next_connect(self) -> tuple[str, bytes]:
        """The last will and the "online" state of one connection carry the same time,
        its connect time: the cloud takes a will as newer than the online it ends."""
        self._connect_ns = self._now_ns()
        return self._state_topic, self._state(False, StateReason.LAST_WILL, self._connect_ns)

    def _say_online(self, client: mqtt.Client, session_present: bool) -> None:
        online = self._state(True, StateReason.CONNECTED, self._connect_ns)
        client.publish(self._state_topic, online, qos=1, retain=True)

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

    def _state(self, online: bool, reason: StateReason, ts_ns: int | None = None) -> bytes:
        return encode(
            DeviceState(
                site=self._site,
                device=self._device,
                ts=self._now_ns() if ts_ns is None else ts_ns,
                online=online,
                reason=reason,
            )
        )

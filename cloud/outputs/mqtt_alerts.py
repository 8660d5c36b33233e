"""Alerts on MQTT, over the shared `runtime.mqtt_link.MqttLink`.

The link is the one the edge publisher and the gateway ingest use: MQTT v5,
settings from the ``[mqtt]`` section (`MqttSection.link_settings`), TLS, the
broker's maximum packet size, its state in `LinkStatus`. As there, one thread
owns it: the publisher's link thread turns it (so the connection, keepalive
included, stays up between calls), publishes the alerts a call hands over and
runs paho's callbacks; a call only hands alerts over and waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.outputs.delivery import OutputError, OutputStats
from runtime import mqtt_safe
from runtime.config_sections import LinkSettings
from runtime.logs import kv
from runtime.mqtt_link import MqttLink
from runtime.statefile import UnreadableState, read_state, write_state
from wire.errors import WireError
from wire.messages import Alert, encode
from wire.topics import alert_topic

log = logging.getLogger(__name__)

POLL_S: Final = 0.05  # how often a waiting call looks at the link's state
ERROR_PAUSE_S: Final = 1.0  # after an unexpected error in the link thread


class AlertPublishError(OutputError):
    """The broker did not take every alert; ``pending`` are kept for the next call."""

    def __init__(self, message: str, pending: list[Alert]) -> None:
        super().__init__(message)
        self.pending = pending


class PendingAlerts(msgspec.Struct, kw_only=True):
    """The publisher's unacknowledged alerts, saved for the next run."""

    alerts: list[Alert]


class _Handover:
    """One call's alerts, handed to the link thread; used under the publisher's lock."""

    def __init__(self, alerts: list[Alert]) -> None:
        self.unsent = alerts  # not given to paho yet, oldest first
        self.awaiting: dict[int, Alert] = {}  # paho mid -> alert whose PUBACK is due
        self.acked: list[Alert] = []
        self.refused: list[tuple[Alert, str]] = []  # (alert, why), refused for good

    @property
    def settled(self) -> bool:
        return not self.unsent and not self.awaiting


class AlertPublisher:
    """Alerts to ``tp/v1/alerts/{site|_fleet}/{type}``, QoS 1, not retained, MQTT v5.

    One `MqttLink`, kept across calls while it is up (turned by the link thread,
    see the module doc). A call waits for the link to be up (a link that went
    down since the last call is replaced, so the new one connects at once),
    hands it the pending alerts and waits for their PUBACKs; on any failure
    (broker unreachable, CONNACK refused, no PUBACK in time) the link is
    dropped, so paho keeps no copies of its own to re-send, and the
    unacknowledged alerts stay pending here for the next call, which makes a
    new link. An alert whose PUBACK came late may so be delivered twice: same
    alert_id. Every publish goes through `runtime.mqtt_safe` (with the
    broker's maximum packet size): an alert no broker would take (which would
    cost the connection) is refused, counted and logged.
    With ``pending_path``, what is still pending after a failure or at close
    is saved there and queued again by the next publisher (the next run of a
    ``--once`` job), so a broker outage across runs loses no alert.
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        max_pending: int = 10_000,
        pending_path: Path | None = None,
    ) -> None:
        self.target = f"mqtt {settings.host}:{settings.port} client_id={settings.client_id}"
        self.stats = OutputStats()
        self._settings = settings
        self._password = password
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._max_pending = max_pending
        self._pending: dict[Alert, None] = {}  # insertion-ordered set: oldest first
        self._lock = threading.Condition()  # the handover, between a call and the link thread
        self._handover: _Handover | None = None
        self._link: MqttLink | None = None
        self._link_thread: threading.Thread | None = None
        self._link_stop = threading.Event()
        self._pending_path = pending_path
        self._enqueue(self._load_pending())

    @property
    def pending(self) -> list[Alert]:
        """Alerts not yet acknowledged by the broker, oldest first."""
        return list(self._pending)

    def publish(self, alerts: Sequence[Alert]) -> int:
        """Publish the pending alerts, then ``alerts``; returns how many the broker acked.

        Raises `AlertPublishError` (with the alerts still pending) when not all of
        them were acknowledged within the connect and publish timeouts.
        """
        self._enqueue(alerts)
        if not self._pending:
            return 0
        try:
            self._link_up()
        except OutputError as exc:
            raise self._failed(str(exc)) from None
        handover = _Handover(list(self._pending))
        with self._lock:
            self._handover = handover
        self._wait(lambda: handover.settled, self._publish_timeout_s)
        with self._lock:
            self._handover = None  # the link thread no longer touches it
        for alert, reason in handover.refused:
            self._refuse(alert, reason)
        for alert in handover.acked:
            del self._pending[alert]
        delivered = len(handover.acked)
        self.stats.delivered += delivered
        if self._pending:
            raise self._failed(
                f"{len(self._pending)} alerts not acknowledged within {self._publish_timeout_s}s"
            )
        self._save_pending()
        log.info("alerts_published", extra=kv(target=self.target, alerts=delivered))
        return delivered

    def _enqueue(self, alerts: Sequence[Alert]) -> None:
        dropped = 0
        for alert in alerts:
            self._pending[alert] = None
            if len(self._pending) > self._max_pending:
                del self._pending[next(iter(self._pending))]
                dropped += 1
        if dropped:
            self.stats.dropped += dropped
            log.error(
                "alerts_dropped",
                extra=kv(target=self.target, dropped=dropped, max_pending=self._max_pending),
            )

    def _refuse(self, alert: Alert, reason: str) -> None:
        del self._pending[alert]
        self.stats.refused += 1
        log.error("alert_publish_refused", extra=kv(alert_id=alert.alert_id, reason=reason))

    def _failed(self, cause: str) -> AlertPublishError:
        """Drop the link and describe the failure; the pending alerts stay."""
        self._drop_link()
        self._save_pending()
        self.stats.failures += 1
        return AlertPublishError(
            f"{self.target}: {cause}; {len(self._pending)} alerts kept for the next try",
            self.pending,
        )

    def _wait(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Until ``ready()`` (woken by the link thread, or every `POLL_S`) or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not ready() and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(min(left, POLL_S))

    # -- the link ------------------------------------------------------------------

    def _link_up(self) -> None:
        """Make sure a connected link is kept; raises `OutputError` when none comes up."""
        if self._link is not None and not self._link.status.connected:
            self._drop_link()  # down since the last call: a new link connects at once
        link = self._link or self._start_link()
        status = link.status
        self._wait(lambda: status.connected or status.connect_failures > 0, self._connect_timeout_s)
        if status.connected:
            return
        if status.last_error is not None:
            raise OutputError(f"cannot connect: {status.last_error}")
        raise OutputError(f"not connected within {self._connect_timeout_s}s")

    def _start_link(self) -> MqttLink:
        link = MqttLink(self._settings, password=self._password)
        link.client.connect_timeout = self._connect_timeout_s
        link.client.on_publish = self._on_publish
        self._link_stop = threading.Event()
        self._link_thread = threading.Thread(
            target=self._keep_up,
            args=(link, self._link_stop),
            name=f"mqtt-alerts-{self._settings.client_id}",
            daemon=True,  # as paho's own loop thread: a publisher not closed never blocks exit
        )
        self._link = link
        self._link_thread.start()
        return link

    def _drop_link(self) -> None:
        """Stop the link thread, which disconnects the link on its way out."""
        thread, self._link_thread, self._link = self._link_thread, None, None
        if thread is not None:
            self._link_stop.set()
            thread.join()

    def _keep_up(self, link: MqttLink, stop: threading.Event) -> None:
        """The link thread: turn the link, publish what a call handed over, until ``stop``."""
        while not stop.is_set():
            try:
                link.turn(stop)
                if link.status.connected:
                    self._publish_handed(link)
            except Exception as exc:  # a bug: logged; the link and the thread go on
                log.error(
                    "alert_link_error",
                    extra=kv(target=self.target, error=f"{type(exc).__name__}: {exc}"),
                    exc_info=True,
                )
                stop.wait(ERROR_PAUSE_S)
        link.close()

    def _publish_handed(self, link: MqttLink) -> None:
        """In the link thread: publish the alerts a call handed over and not yet sent."""
        with self._lock:
            handover = self._handover
            if handover is None or not handover.unsent:
                return
            for alert in handover.unsent:
                try:
                    topic = alert_topic(alert.site, alert.type)
                    info = mqtt_safe.publish(
                        link.client,
                        topic,
                        encode(alert),
                        qos=1,
                        max_packet_bytes=link.max_packet_bytes,
                    )
                except (WireError, mqtt_safe.UnpublishableError) as exc:
                    handover.refused.append((alert, str(exc)))
                    continue
                # paho keeps every other QoS 1 message until its PUBACK, re-sent on a
                # reconnect within the call; one it did not take stays pending here.
                if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    handover.awaiting[info.mid] = alert
            handover.unsent = []
            self._lock.notify_all()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        """paho's callback, in the link thread: a PUBACK settles its alert."""
        with self._lock:
            handover = self._handover
            alert = None if handover is None else handover.awaiting.pop(mid, None)
            if handover is None or alert is None:
                return  # its call gave up: the alert is still pending for the next one
            if reason.is_failure:
                handover.refused.append((alert, f"PUBACK {reason}"))
            else:
                handover.acked.append(alert)
            self._lock.notify_all()

    def close(self) -> None:
        if self._pending:
            log.warning(
                "alerts_not_published",
                extra=kv(
                    target=self.target,
                    alerts=len(self._pending),
                    kept_in=str(self._pending_path) if self._pending_path else None,
                ),
            )
        self._save_pending()
        self._drop_link()

    # -- kept across runs ----------------------------------------------------------

    def _load_pending(self) -> list[Alert]:
        if self._pending_path is None:
            return []
        try:
            saved = read_state(self._pending_path, PendingAlerts, what="pending_alerts")
        except UnreadableState:
            return []
        return [] if saved is None else saved.alerts

    def _save_pending(self) -> None:
        """Keep the pending alerts on disk, or remove the file once none are left."""
        if self._pending_path is None:
            return
        try:
            if self._pending:
                write_state(self._pending_path, PendingAlerts(alerts=self.pending))
            else:
                self._pending_path.unlink(missing_ok=True)
        except OSError as exc:
            log.error(
                "pending_alerts_not_saved", extra=kv(path=str(self._pending_path), error=str(exc))
            )

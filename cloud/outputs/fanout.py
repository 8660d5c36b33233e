"""Where alerts go: InfluxDB (``anomaly`` points), MQTT (the alert topics), a webhook.

Every output is optional and says how many alerts it delivered. When it could
not deliver, it raises an `OutputError` whose text names the target and the
cause; `AlertOutputs` runs them all, so one failing output never stops the
others, and reports per output. What a server refuses for good (a rejected
point, a PUBACK with an error reason, a 4xx from the webhook) is logged,
counted and dropped: sending it again would be refused again.

The MQTT publisher keeps what it could not deliver (bounded, oldest dropped
first and counted) and sends it first on the next call; the InfluxDB points
and the webhook are retried within the call, a few times, then given up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec
import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime import mqtt_safe
from runtime.backoff import Backoff
from runtime.config import read_secret
from runtime.influx_sinks.base import LineSink, WriteResult, error_text, retry_after_seconds
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from runtime.logs import kv
from runtime.mqtt_link import TlsFiles, configure_tls
from runtime.statefile import UnreadableState, read_state, write_state
from wire.errors import WireError
from wire.messages import Alert, encode
from wire.points import to_line
from wire.topics import alert_topic

log = logging.getLogger(__name__)

WEBHOOK_TOKEN_ENV: Final = "TILLPULSE_WEBHOOK_TOKEN"
_TOO_MANY: Final = 429


class OutputError(Exception):
    """An output could not deliver; the text names the target and the cause."""


class AlertPublishError(OutputError):
    """The broker did not take every alert; ``pending`` are kept for the next call."""

    def __init__(self, message: str, pending: list[Alert]) -> None:
        super().__init__(message)
        self.pending = pending


class OutputStats(msgspec.Struct, kw_only=True):
    delivered: int = 0
    refused: int = 0  # the server refused them for good: logged and dropped
    failures: int = 0  # calls that raised OutputError
    dropped: int = 0  # MQTT only: the oldest pending alerts, over ``max_pending``


class AnomalyWriter:
    """Alerts as ``anomaly`` points, through one of the gateway's InfluxDB sinks (owned)."""

    def __init__(
        self,
        sink: LineSink,
        *,
        attempts: int = 4,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
    ) -> None:
        self.sink = sink
        self.stats = OutputStats()
        self._attempts = attempts
        self._retry = (retry_initial_s, retry_max_s)

    def write(self, alerts: Sequence[Alert]) -> int:
        """Write the alerts' points; returns how many InfluxDB accepted."""
        lines: list[bytes] = []
        for alert in alerts:
            try:
                lines.append(to_line(alert).encode())
            except WireError as exc:
                self._refused(alert.alert_id, str(exc))
        if not lines:
            return 0
        result = self._write_retrying(lines)
        for rejected in result.rejected:
            self._refused(rejected.line.decode(errors="replace")[:200], rejected.reason)
        self.stats.delivered += result.written
        return result.written

    def _write_retrying(self, lines: list[bytes]) -> WriteResult:
        backoff = Backoff(*self._retry, retry_after_max_s=self._retry[1])
        while True:
            try:
                return self.sink.write(lines)
            except SinkRetriableError as exc:
                delay = backoff.next_delay(exc.retry_after_s)
                if backoff.attempt >= self._attempts:
                    self.stats.failures += 1
                    raise OutputError(
                        f"{self.sink.name}: {len(lines)} anomaly points not written after "
                        f"{backoff.attempt} attempts: {exc}"
                    ) from exc
                log.warning(
                    "anomaly_write_retry",
                    extra=kv(
                        sink=self.sink.name, attempt=backoff.attempt, delay_s=delay, error=exc
                    ),
                )
                time.sleep(delay)
            except SinkConfigError as exc:
                self.stats.failures += 1
                raise OutputError(f"anomaly points not written: {exc}") from exc

    def _refused(self, what: str, reason: str) -> None:
        self.stats.refused += 1
        log.error(
            "anomaly_point_rejected", extra=kv(sink=self.sink.name, point=what, reason=reason)
        )

    def close(self) -> None:
        self.sink.close()


class AlertPublisher:
    """Alerts to ``tp/v1/alerts/{site|_fleet}/{type}``, QoS 1, not retained, MQTT v5.

    One connection, kept across calls while it is up (paho's network thread,
    `loop_start`). A call connects if needed, publishes the pending alerts and
    waits for their PUBACKs; on any failure (broker unreachable, CONNACK refused,
    no PUBACK in time) the connection is dropped, so paho keeps no copies of its
    own, and the unacknowledged alerts stay pending here for the next call.
    An alert whose PUBACK came late may so be delivered twice: same alert_id.
    Every publish goes through `runtime.mqtt_safe`: an alert no broker would
    take (which would cost the connection) is refused, counted and logged.
    With ``pending_path``, what is still pending after a failure or at close
    is saved there and queued again by the next publisher (the next run of a
    ``--once`` job), so a broker outage across runs loses no alert.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        max_pending: int = 10_000,
        pending_path: Path | None = None,
    ) -> None:
        self.target = f"mqtt {host}:{port} client_id={client_id}"
        self.stats = OutputStats()
        self._host = host
        self._port = port
        self._client_id = client_id
        self._credentials = (username, password)
        self._tls = tls
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._max_pending = max_pending
        self._pending: dict[Alert, None] = {}  # insertion-ordered set: oldest first
        self._client: mqtt.Client | None = None
        self._connack = threading.Event()
        self._connack_reason: ReasonCode | None = None
        self._refusals: dict[int, ReasonCode] = {}  # mid -> PUBACK failure reason
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
            client = self._connected()
        except OutputError as exc:
            raise self._failed(str(exc)) from None
        self._refusals.clear()
        sent: list[tuple[Alert, mqtt.MQTTMessageInfo]] = []
        for alert in list(self._pending):
            try:
                topic = alert_topic(alert.site, alert.type)
                info = mqtt_safe.publish(client, topic, encode(alert), qos=1)
            except (WireError, mqtt_safe.UnpublishableError) as exc:
                self._refuse(alert, str(exc))
                continue
            sent.append((alert, info))
        deadline = time.monotonic() + self._publish_timeout_s
        for _, info in sent:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with contextlib.suppress(RuntimeError):  # the connection dropped meanwhile
                    info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
        delivered = 0
        for alert, info in sent:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not info.is_published():
                continue
            reason = self._refusals.get(info.mid)
            if reason is not None:
                self._refuse(alert, f"PUBACK {reason}")
                continue
            del self._pending[alert]
            delivered += 1
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
        """Drop the connection and describe the failure; the pending alerts stay."""
        self._disconnect()
        self._save_pending()
        self.stats.failures += 1
        return AlertPublishError(
            f"{self.target}: {cause}; {len(self._pending)} alerts kept for the next try",
            self.pending,
        )

    def _connected(self) -> mqtt.Client:
        """The client, connected (a new one if the last connection dropped)."""
        if self._client is not None and self._client.is_connected():
            return self._client
        self._disconnect()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5
        )
        if self._credentials[0] is not None:
            client.username_pw_set(*self._credentials)
        if self._tls is not None:
            configure_tls(client, self._tls)
        client.connect_timeout = self._connect_timeout_s
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._connack.clear()
        self._connack_reason = None
        try:
            client.connect(self._host, self._port, keepalive=self._keepalive_s)
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise OutputError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        self._client = client
        client.loop_start()
        if not self._connack.wait(self._connect_timeout_s):
            raise OutputError(f"no CONNACK within {self._connect_timeout_s}s")
        if self._connack_reason is not None and self._connack_reason.is_failure:
            raise OutputError(f"connection refused: CONNACK {self._connack_reason}")
        log.info("broker_connected", extra=kv(target=self.target))
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack_reason = reason
        self._connack.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:  # runs before paho marks the message published
            self._refusals[mid] = reason

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

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
        self._disconnect()

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


class PendingAlerts(msgspec.Struct, kw_only=True):
    """The publisher's unacknowledged alerts, saved for the next run."""

    alerts: list[Alert]


class WebhookNotifier:
    """POSTs each alert as JSON to a URL, with an optional bearer token.

    Connection errors, 429 and 5xx are retried with backoff, within ``attempts``
    and a time budget per call; when the endpoint stays down the rest of the
    call's alerts are not tried (`OutputError`). Any other answer (4xx) is
    logged, counted and dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        token_file: str | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
        budget_s: float = 30.0,
    ) -> None:
        parsed = urllib3.util.parse_url(url)
        self.target = f"webhook {parsed.scheme}://{parsed.netloc}{parsed.path or ''}"  # no query
        self.stats = OutputStats()
        self._url = url
        self._headers = {"Content-Type": "application/json"}
        if token_file is not None or os.environ.get(WEBHOOK_TOKEN_ENV):
            self._headers["Authorization"] = f"Bearer {read_secret(token_file, WEBHOOK_TOKEN_ENV)}"
        self._attempts = attempts
        self._retry = (retry_initial_s, retry_max_s)
        self._budget_s = budget_s
        self._http = urllib3.PoolManager(
            num_pools=1, retries=False, timeout=urllib3.Timeout(total=timeout_s)
        )

    def send(self, alerts: Sequence[Alert]) -> int:
        """POST every alert; returns how many the endpoint accepted (2xx)."""
        deadline = time.monotonic() + self._budget_s
        delivered = 0
        for index, alert in enumerate(alerts):
            try:
                delivered += self._post(alert, deadline)
            except OutputError as exc:
                self.stats.failures += 1
                raise OutputError(f"{exc}; {len(alerts) - index} alerts not sent") from None
        return delivered

    def _post(self, alert: Alert, deadline: float) -> bool:
        """True: accepted; False: refused for good. Raises OutputError: endpoint down."""
        backoff = Backoff(*self._retry, retry_after_max_s=self._retry[1])
        body = encode(alert)
        while True:
            retry_after: float | None = None
            try:
                response = self._http.request("POST", self._url, body=body, headers=self._headers)
            except urllib3.exceptions.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status < 300:
                    self.stats.delivered += 1
                    return True
                problem = f"HTTP {response.status}: {error_text(response.data)[:200]}"
                if response.status != _TOO_MANY and response.status < 500:
                    self.stats.refused += 1
                    log.error(
                        "webhook_refused",
                        extra=kv(target=self.target, alert_id=alert.alert_id, error=problem),
                    )
                    return False
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            delay = backoff.next_delay(retry_after)
            if backoff.attempt >= self._attempts or time.monotonic() + delay > deadline:
                raise OutputError(
                    f"{self.target}: alert {alert.alert_id} not delivered after "
                    f"{backoff.attempt} attempts: {problem}"
                )
            log.warning(
                "webhook_retry",
                extra=kv(target=self.target, attempt=backoff.attempt, delay_s=delay, error=problem),
            )
            time.sleep(delay)

    def close(self) -> None:
        self._http.clear()


class OutputReport(msgspec.Struct, kw_only=True):
    delivered: int = 0
    error: str | None = None  # the output's OutputError, when it raised one


class AlertOutputs:
    """The configured outputs, each given every alert; one failing never stops the others."""

    def __init__(
        self,
        *,
        influxdb: AnomalyWriter | None = None,
        mqtt: AlertPublisher | None = None,
        webhook: WebhookNotifier | None = None,
    ) -> None:
        self._outputs: dict[str, Callable[[Sequence[Alert]], int]] = {}
        self._closers: list[Callable[[], None]] = []
        if influxdb is not None:
            self._outputs["influxdb"] = influxdb.write
            self._closers.append(influxdb.close)
        if mqtt is not None:
            self._outputs["mqtt"] = mqtt.publish
            self._closers.append(mqtt.close)
        if webhook is not None:
            self._outputs["webhook"] = webhook.send
            self._closers.append(webhook.close)

    def emit(self, alerts: Sequence[Alert]) -> dict[str, OutputReport]:
        """Send ``alerts`` to every output (MQTT also sends what an earlier call left)."""
        reports: dict[str, OutputReport] = {}
        for name, send in self._outputs.items():
            try:
                reports[name] = OutputReport(delivered=send(alerts))
            except OutputError as exc:
                log.error("output_failed", extra=kv(output=name, error=str(exc)))
                reports[name] = OutputReport(error=str(exc))
            except Exception as exc:  # a bug in one output must not stop the others
                log.exception("output_crashed", extra=kv(output=name))
                reports[name] = OutputReport(error=f"{type(exc).__name__}: {exc}")
        return reports

    def close(self) -> None:
        for close in self._closers:
            close()

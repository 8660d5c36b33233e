"""Every configured alert output, each given every alert: `AlertOutputs`.

Every output is optional and says how many alerts it delivered. When it could
not deliver, it raises an `OutputError` whose text names the target and the
cause; `AlertOutputs` runs them all, so one failing output never stops the
others, and reports per output. What a server refuses for good (a rejected
point, a PUBACK with an error reason, a 4xx from the webhook) is logged,
counted and dropped by the output: sending it again would be refused again.

The MQTT publisher keeps what it could not deliver (bounded, oldest dropped
first and counted) and sends it first on the next call; the InfluxDB points
and the webhook are retried within the call, a few times, then given up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec

from cloud.outputs.anomaly_points import AnomalyWriter
from cloud.outputs.delivery import OutputError
from cloud.outputs.mqtt_alerts import AlertPublisher
from cloud.outputs.webhook import WebhookNotifier
from runtime.logs import kv
from wire.messages import Alert

log = logging.getLogger(__name__)


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
        self._failing: set[str] = set()  # outputs down: logged when they went, and came back
        self._mqtt = mqtt
        if influxdb is not None:
            self._outputs["influxdb"] = influxdb.write
            self._closers.append(influxdb.close)
        if mqtt is not None:
            self._outputs["mqtt"] = mqtt.publish
            self._closers.append(mqtt.close)
        if webhook is not None:
            self._outputs["webhook"] = webhook.send
            self._closers.append(webhook.close)

    @property
    def pending(self) -> int:
        """Alerts kept to be sent again (the MQTT publisher's, after an outage)."""
        return 0 if self._mqtt is None else len(self._mqtt.pending)

    def emit(self, alerts: Sequence[Alert]) -> dict[str, OutputReport]:
        """Send ``alerts`` to every output (MQTT also sends what an earlier call left)."""
        reports: dict[str, OutputReport] = {}
        for name, send in self._outputs.items():
            try:
                reports[name] = OutputReport(delivered=send(alerts))
            except OutputError as exc:
                # once per outage: a live job retries every cycle
                level = logging.DEBUG if name in self._failing else logging.ERROR
                log.log(level, "output_failed", extra=kv(output=name, error=str(exc)))
                self._failing.add(name)
                reports[name] = OutputReport(error=str(exc))
                continue
            except Exception as exc:  # a bug in one output must not stop the others
                log.exception("output_crashed", extra=kv(output=name))
                reports[name] = OutputReport(error=f"{type(exc).__name__}: {exc}")
                continue
            if name in self._failing:
                self._failing.discard(name)
                log.info("output_back", extra=kv(output=name))
        return reports

    def close(self) -> None:
        for close in self._closers:
            close()

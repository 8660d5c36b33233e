"""Alerts as ``anomaly`` points in InfluxDB, through one of the gateway's line sinks.

A write is retried within the call, a few times with backoff, then given up
(`OutputError`). A point InfluxDB refuses for good is logged, counted and
dropped: writing it again would be refused again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from cloud.outputs.delivery import OutputError, OutputStats
from runtime.backoff import Backoff
from runtime.influx_sinks.base import LineSink, WriteResult
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from runtime.logs import kv
from wire.errors import WireError
from wire.messages import Alert
from wire.points import to_line

log = logging.getLogger(__name__)


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

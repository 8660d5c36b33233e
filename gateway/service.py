"""The gateway process: ingest, spool, forwarder and self-metrics, wired from the config.

Threads: the MQTT ingest, the forwarder, the metrics HTTP server; the main
thread supervises once a second (refreshes /metrics, appends a
``gateway_stats`` point every ``STATS_EVERY_S``, stops everything if a worker
died). SIGTERM/SIGINT stop the ingest first (its last group is appended and
acknowledged), then the forwarder (what it had not written stays in the
spool for the next start), then close the spool.

`Gateway.health` (/healthz, and the ``degraded`` gauges of /metrics) is
unhealthy (503) when the gateway cannot go on by itself, and degraded (200,
with the reasons) while it works around a fault it recovers from alone: a
full disk or spool (acks held back, the broker keeps the messages), a cursor
or dead letters that cannot be written, an MQTT link that keeps reconnecting.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from gateway.config import GatewayConfig
from gateway.errors import SpoolError, SpoolLockedError, StartError
from gateway.forwarder import Forwarder, ForwarderSettings
from gateway.ingest import Ingest
from gateway.metrics import Degraded, GatewayMetrics, Health, MetricsServer
from gateway.pipeline import Pipeline
from gateway.spool import FsyncMode, FsyncPolicy, Spool
from runtime.deadletters import DeadLetters
from runtime.influx_sinks import make_sink
from runtime.logs import kv

log = logging.getLogger(__name__)

STATS_EVERY_S: Final = 10.0
UNHEALTHY_LAG_S: Final = 300.0  # oldest unforwarded line older than this: /healthz says 503


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        gateway_id = config.gateway.id
        try:
            self.spool = Spool(
                config.spool_dir,
                max_bytes=config.spool.max_bytes,
                segment_bytes=config.spool.segment_bytes,
                fsync=FsyncPolicy(FsyncMode(config.spool.fsync), config.spool.fsync_interval_s),
            )
        except SpoolLockedError as exc:
            raise StartError(
                f"[gateway] state_dir {config.gateway.state_dir}: {exc}: stop the other "
                "gateway, or give this one a state_dir of its own"
            ) from exc
        self.deadletters = DeadLetters(
            config.deadletters_dir, max_bytes=config.deadletters.max_bytes
        )
        self.pipeline = Pipeline(
            gateway_id,
            time.time_ns(),
            aggregates=config.aggregates,
            dedup=config.dedup,
            gaps=config.gaps,
            timestamps=config.timestamps,
        )
        mqtt = config.mqtt
        self.ingest = Ingest(
            mqtt.link_settings(gateway_id, receive_maximum=mqtt.receive_maximum),
            password=mqtt.password(),
            gateway=gateway_id,
            shared_group=mqtt.shared_group,
            pipeline=self.pipeline,
            spool=self.spool,
            deadletters=self.deadletters,
        )
        forwarder = config.forwarder
        self.forwarder = Forwarder(
            self.spool,
            make_sink(config.influxdb),
            self.deadletters,
            ForwarderSettings(
                batch_lines=forwarder.batch_lines,
                batch_bytes=forwarder.batch_bytes,
                linger_s=forwarder.linger_ms / 1000,
            ),
        )
        self.metrics = GatewayMetrics(gateway_id)
        self.http = MetricsServer(self.metrics, config.http.address, self.health)
        self.stop = threading.Event()

    def run(self) -> int:
        ingest_thread = threading.Thread(
            target=self.ingest.run, args=(self.stop,), name="ingest", daemon=True
        )
        self.forwarder.start()
        ingest_thread.start()
        self.http.start()
        timestamps = self.config.timestamps
        log.info(
            "gateway_started",
            extra=kv(
                gateway=self.config.gateway.id,
                max_event_age=timestamps.max_event_age,
                max_future_skew=timestamps.max_future_skew,
            ),
        )
        next_stats = time.monotonic() + STATS_EVERY_S
        failed = False
        while not self.stop.wait(1.0):
            self.refresh_metrics()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_EVERY_S
                self._append_stats_point()
            if not ingest_thread.is_alive() or not self.forwarder.stats().running:
                log.critical("worker_died", extra=kv(ingest=ingest_thread.is_alive()))
                failed = True
                self.stop.set()
        ingest_thread.join(timeout=30)
        self.forwarder.stop()
        self.http.stop()
        self.spool.close()
        self.deadletters.close()
        log.info("gateway_stopped", extra=kv(gateway=self.config.gateway.id, failed=failed))
        return 1 if failed else 0  # non-zero: a supervisor restarts it

    def refresh_metrics(self) -> None:
        self.metrics.update_pipeline(self.ingest.pipeline_stats)
        self.metrics.report(
            "spool",
            self.spool.stats(),
            counters={
                "appends",
                "appended_lines",
                "fsyncs",
                "disk_errors",
                "cursor_write_errors",
            },
        )
        self.metrics.report(
            "forwarder",
            self.forwarder.stats(),
            counters={
                "batches",
                "lines_written",
                "dead_lettered",
                "retries",
                "config_errors",
                "internal_errors",
            },
        )
        self.metrics.report(
            "ingest",
            self.ingest.stats,
            counters={
                "received",
                "acked",
                "groups",
                "spool_full",
                "invalid_packets",
                "deadletters_published",
                "deadletters_unpublished",
                "redelivered_rejections",
                "internal_errors",
            },
        )
        self.metrics.report("link", self.ingest.link.status, counters={"connects"})
        deadletters = self.deadletters
        figures = {
            "kept": deadletters.kept,
            "evicted": deadletters.evicted,
            "write_errors": deadletters.write_errors,
            "lost": deadletters.lost,
            "refused_pan": deadletters.refused_pan,
        }
        self.metrics.report("deadletters", figures, counters=figures.keys())
        self.metrics.update_health(self.health())

    def health(self) -> Health:
        link = self.ingest.link.status
        forwarder = self.forwarder.stats()
        details = {"mqtt_connected": link.connected, "forwarder_lag_s": forwarder.lag_s}
        if self.ingest.broken is not None:
            return Health(False, f"spool broken: {self.ingest.broken}", details)
        if not forwarder.running:
            return Health(False, f"forwarder stopped: {forwarder.last_error}", details)
        if not link.connected:
            return Health(False, f"MQTT broker not connected: {link.last_error}", details)
        if forwarder.lag_s is not None and forwarder.lag_s > UNHEALTHY_LAG_S:
            return Health(False, f"InfluxDB writes {forwarder.lag_s:.0f}s behind", details)
        return Health(True, "", details, self._degraded())

    def _degraded(self) -> dict[Degraded, str]:
        spool = self.spool.stats()
        degraded = {}
        flapping = self.ingest.link.flapping()
        if flapping is not None:
            degraded[Degraded.MQTT_RECONNECTING] = flapping
        if spool.full_reason is not None:
            code = Degraded.DISK_FULL if spool.disk_full else Degraded.SPOOL_AT_MAX_BYTES
            degraded[code] = spool.full_reason
        if not spool.cursor_persisted:
            degraded[Degraded.CURSOR_NOT_PERSISTED] = (
                f"spool cursor not persisted ({spool.cursor_write_errors} write errors)"
            )
        if self.deadletters.last_error is not None:
            degraded[Degraded.DEADLETTERS_NOT_WRITABLE] = (
                f"dead letters not writable ({self.deadletters.lost} lost): "
                f"{self.deadletters.last_error}"
            )
        return degraded

    def _append_stats_point(self) -> None:
        try:
            self.spool.append([self.metrics.stats_line(time.time_ns()).encode()])
        except SpoolError as exc:  # self-metrics never stand in the way of events
            log.warning("gateway_stats_not_spooled", extra=kv(error=str(exc)))

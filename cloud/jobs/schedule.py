"""The cloud jobs: detect (once, every N, or over a stored range) and train.

Windows are aligned to multiples of the window length (UTC), so every worker
and every run agrees on them; a live run detects the newest window that
ended at least ``lag_s`` ago (time for the pipeline to deliver it), and
catches up on windows it missed since the last run, oldest first.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from cloud.config import CloudConfig
from cloud.detectors.series_watch import SeriesSettings
from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.alert_lifecycle import AlertManager
from cloud.jobs.cycle import CycleReport, Detection, DetectionSettings
from cloud.jobs.training import train
from cloud.outputs.anomaly_points import AnomalyWriter
from cloud.outputs.fanout import AlertOutputs
from cloud.outputs.mqtt_alerts import AlertPublisher
from cloud.outputs.webhook import WebhookNotifier
from cloud.reading.influxql_reader import InfluxQLReader
from cloud.reading.window import Shard
from runtime.influx_sinks import make_sink
from runtime.logs import kv
from wire.timestamps import NS_PER_S

log = logging.getLogger(__name__)

MAX_CATCH_UP_WINDOWS: Final = 288  # a day of 5-minute windows; older ones are skipped


def window_ends(start_ns: int, end_ns: int, window_ns: int) -> Iterator[int]:
    """Aligned window ends in (start, end]."""
    first = start_ns - start_ns % window_ns + window_ns
    yield from range(first, end_ns + 1, window_ns)


def make_outputs(config: CloudConfig) -> AlertOutputs:
    influx = None
    if config.influxdb is not None:
        influx = AnomalyWriter(make_sink(config.influxdb))
    mqtt = None
    if config.mqtt is not None:
        section = config.mqtt
        mqtt = AlertPublisher(
            section.link_settings(section.client_id),
            password=section.password(),
            pending_path=config.state_dir / f"mqtt-pending.{_file_safe(section.client_id)}.json",
        )
    webhook = None
    if config.webhook is not None:
        hook = config.webhook
        webhook = WebhookNotifier(hook.url, token_file=hook.token_file, timeout_s=hook.timeout_s)
    return AlertOutputs(influxdb=influx, mqtt=mqtt, webhook=webhook)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def make_detection(
    config: CloudConfig, shard: Shard, *, require_model: bool = False, calendar: Path | None = None
) -> Detection:
    """Detection as configured; ``calendar``: the operator calendar instead of the config's."""
    days = config.calendar(calendar)  # an unusable calendar stops it before anything else
    state_dir = config.state_dir / (f"shard-{shard.index}-of-{shard.count}")
    state_dir.mkdir(parents=True, exist_ok=True)
    model = None
    if config.model_path.exists():
        model = TrainedModel.load(config.model_path)
    elif require_model:
        raise ValueError(f"no model at {config.model_path}: run `tillpulse cloud train` first")
    else:
        log.warning("model_missing", extra=kv(path=str(config.model_path)))
    alerts = AlertManager(
        clear_windows=config.cloud.clear_windows,
        cooldown_s=config.cloud.cooldown_s,
        state_path=state_dir / "alerts.json",
    )
    return Detection(
        InfluxQLReader(config.query.reader_settings()),
        model,
        DetectionSettings(
            window_s=config.cloud.window_s,
            calendar=days,
            series=SeriesSettings(
                enabled=config.cloud.series_watch, threshold=config.cloud.series_threshold
            ),
        ),
        shard=shard,
        state_dir=state_dir,
        alerts=alerts,
    )


def run_range(
    detection: Detection,
    outputs: AlertOutputs,
    start_ns: int,
    end_ns: int,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> int:
    """Detect every window ending in (start, end] that was not done yet; returns alerts sent."""
    sent = 0
    done = detection.alerts.last_window_ns or 0
    for end in window_ends(max(start_ns, done), end_ns, detection.window_ns):
        report = detection.run(end)
        if report.alerts:
            outputs.emit(report.alerts)
            sent += len(report.alerts)
        if on_cycle is not None:
            on_cycle(report)
    return sent


def run_live(
    config: CloudConfig,
    detection: Detection,
    outputs: AlertOutputs,
    *,
    every_s: float | None,
    stop: threading.Event,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> int:
    """Detect the windows that are due now (``every_s`` None: once, else until stopped)."""
    sent = 0
    window_ns = detection.window_ns
    while True:
        due = time.time_ns() - config.cloud.lag_s * NS_PER_S
        earliest = due - MAX_CATCH_UP_WINDOWS * window_ns
        sent += run_range(detection, outputs, earliest, due, on_cycle)
        if every_s is None or stop.wait(every_s):
            return sent


def train_model(
    config: CloudConfig, start_ns: int, end_ns: int, path: Path, *, calendar: Path | None = None
) -> TrainedModel:
    """Train and save; the calendar's days (``calendar``, else the config's) are not learned."""
    days = config.calendar(calendar)
    with InfluxQLReader(config.query.reader_settings()) as reader:
        model = train(reader, start_ns, end_ns, window_s=config.cloud.window_s, calendar=days)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model

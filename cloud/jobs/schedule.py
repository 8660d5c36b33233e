"""The cloud jobs: detect (once, every N, or over a stored range) and train.

Windows are aligned to multiples of the window length (UTC), so every worker
and every run agrees on them; a live run detects the newest window that
ended at least ``lag_s`` ago (time for the pipeline to deliver it), and
catches up on windows it missed since the last run, oldest first. A live
run outlives InfluxDB outages (it retries with backoff, logging the outage
once, and catches up when it is back). A replay (`--from`/`--to`) keeps its
state in memory: it never moves the live state on, and a rerun gives the same
alerts.

Training refuses a model that would profile too little (fewer than
`MIN_TERMINALS` terminals with `MIN_HISTORY_DAYS` of payments), or less than
the model it replaces (`install_model`), unless forced; the previous model is
kept beside it as ``<model>.previous``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cloud.config import CloudConfig
from cloud.detectors.series_watch import SeriesSettings
from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.alert_lifecycle import AlertManager
from cloud.jobs.cycle import CycleReport, Detection, DetectionSettings
from cloud.jobs.progress import Progress
from cloud.jobs.training import train
from cloud.outputs.anomaly_points import AnomalyWriter
from cloud.outputs.fanout import AlertOutputs
from cloud.outputs.mqtt_alerts import AlertPublisher
from cloud.outputs.webhook import WebhookNotifier
from cloud.reading.influxql_reader import (
    DatabaseNotFoundError,
    InfluxAuthError,
    InfluxQLReader,
    InfluxQueryError,
)
from cloud.reading.window import Shard
from runtime.backoff import Backoff
from runtime.cli import OperatorError, RuntimeFailure
from runtime.influx_sinks import make_sink
from runtime.logs import kv
from wire.timestamps import NS_PER_DAY, NS_PER_S

log = logging.getLogger(__name__)

MAX_CATCH_UP_WINDOWS: Final = 288  # a day of 5-minute windows; older ones are skipped
MIN_TERMINALS: Final = 1  # a model must profile at least this many terminals ...
MIN_HISTORY_DAYS: Final = 1  # ... each with payments over at least this many days
WORSE_FRACTION: Final = 0.2  # fewer terminals than the model it replaces by more: worse
OUTAGE_BACKOFF: Final = (5.0, 300.0)  # InfluxDB down in a live run: retry delays, s


@dataclass(slots=True)
class Delivery:
    """What a run detected, and how much of it some output could not take."""

    windows: int = 0
    alerts: int = 0
    undelivered: int = 0  # alerts of a cycle where an output failed (MQTT keeps them)
    errors: dict[str, str] = field(default_factory=dict)  # output -> its last error

    def add(self, other: Delivery) -> None:
        self.windows += other.windows
        self.alerts += other.alerts
        self.undelivered += other.undelivered
        self.errors.update(other.errors)

    def summary(self) -> str:
        line = f"windows: {self.windows}, alerts: {self.alerts}, "
        line += f"delivered: {self.alerts - self.undelivered}"
        if self.undelivered:
            causes = "; ".join(f"{name}: {error}" for name, error in sorted(self.errors.items()))
            line += f", not delivered: {self.undelivered} ({causes})"
        return line


def window_ends(start_ns: int, end_ns: int, window_ns: int) -> Iterator[int]:
    """Aligned window ends in (start, end]."""
    first = start_ns - start_ns % window_ns + window_ns
    yield from range(first, end_ns + 1, window_ns)


def make_outputs(config: CloudConfig, *, replay: bool = False) -> AlertOutputs:
    """The configured outputs; a replay's MQTT alerts that could not be delivered are
    not kept for the live job to send later."""
    influx = None
    if config.influxdb is not None:
        influx = AnomalyWriter(make_sink(config.influxdb))
    mqtt = None
    if config.mqtt is not None:
        section = config.mqtt
        mqtt = AlertPublisher(
            section.link_settings(section.client_id),
            password=section.password(),
            pending_path=None
            if replay
            else config.state_dir / f"mqtt-pending.{_file_safe(section.client_id)}.json",
        )
    webhook = None
    if config.webhook is not None:
        hook = config.webhook
        webhook = WebhookNotifier(hook.url, token_file=hook.token_file, timeout_s=hook.timeout_s)
    return AlertOutputs(influxdb=influx, mqtt=mqtt, webhook=webhook)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def shard_state_dir(config: CloudConfig, shard: Shard) -> Path:
    """The live state of ``shard`` (its memory and open alerts), created if missing."""
    state_dir = config.state_dir / f"shard-{shard.index}-of-{shard.count}"
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir


def make_detection(
    config: CloudConfig,
    shard: Shard,
    *,
    require_model: bool = False,
    calendar: Path | None = None,
    replay: bool = False,
) -> Detection:
    """Detection as configured; ``calendar``: the operator calendar instead of the config's;
    ``replay``: its state in memory, the live state untouched."""
    days = config.calendar(calendar)  # an unusable calendar stops it before anything else
    state_dir = None
    if not replay:
        state_dir = shard_state_dir(config, shard)
    model = None
    if config.model_path.exists():
        try:
            model = TrainedModel.load(config.model_path)
        except ValueError as exc:
            raise OperatorError(f"{exc}: train a new one (tillpulse cloud train)") from None
    elif require_model:
        raise OperatorError(f"no model at {config.model_path}: run `tillpulse cloud train` first")
    else:
        log.warning(
            "model_missing",
            extra=kv(path=str(config.model_path), fix="rules only until `tillpulse cloud train`"),
        )
    alerts = AlertManager(
        clear_windows=config.cloud.clear_windows,
        cooldown_s=config.cloud.cooldown_s,
        state_path=None if state_dir is None else state_dir / "alerts.json",
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
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> Delivery:
    """Detect every window ending in (start, end] that was not done yet, until ``stop``."""
    delivery = Delivery()
    done = detection.alerts.last_window_ns or 0
    ends = list(window_ends(max(start_ns, done), end_ns, detection.window_ns))
    for end in (progress or Progress()).track(ends, "detect: windows"):
        if stop is not None and stop.is_set():
            break
        report = detection.run(end)
        delivery.windows += 1
        if report.alerts:
            delivery.alerts += len(report.alerts)
            failed = {
                name: r.error
                for name, r in outputs.emit(report.alerts).items()
                if r.error is not None
            }
            if failed:
                delivery.undelivered += len(report.alerts)
                delivery.errors.update(failed)
        if on_cycle is not None:
            on_cycle(report)
    return delivery


def run_live(
    config: CloudConfig,
    detection: Detection,
    outputs: AlertOutputs,
    *,
    every_s: float | None,
    stop: threading.Event,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> Delivery:
    """Detect the windows that are due now (``every_s`` None: once, else until stopped).
    Every N, an unreachable InfluxDB is waited for (logged once per outage); wrong
    credentials or database end the run, as they do once."""
    total = Delivery()
    window_ns = detection.window_ns
    backoff = Backoff(*OUTAGE_BACKOFF)
    outage_since = 0.0
    while True:
        started = time.monotonic()
        due = time.time_ns() - config.cloud.lag_s * NS_PER_S
        earliest = due - MAX_CATCH_UP_WINDOWS * window_ns
        kept = outputs.pending  # alerts of earlier cycles an output could not take yet
        try:
            cycle = run_range(detection, outputs, earliest, due, on_cycle, stop=stop)
        except (InfluxAuthError, DatabaseNotFoundError):
            raise
        except InfluxQueryError as exc:
            if every_s is None:
                raise
            if not outage_since:
                outage_since = started
                log.warning("influxdb_unavailable", extra=kv(error=str(exc), retry="backoff"))
            if stop.wait(backoff.next_delay()):
                return total
            continue
        if outage_since:
            log.info("influxdb_back", extra=kv(after_s=round(started - outage_since)))
            outage_since = 0.0
            backoff.reset()
        total.add(cycle)
        if outputs.pending and not cycle.alerts:
            outputs.emit([])  # an outage's alerts go out once it is over, not with the next
        # those of earlier cycles that went out now are delivered after all
        total.undelivered -= min(total.undelivered, max(0, kept - outputs.pending))
        log.info(
            "cycle_done",
            extra=kv(
                windows=cycle.windows,
                alerts=cycle.alerts,
                undelivered=cycle.undelivered,
                duration_s=round(time.monotonic() - started, 3),
            ),
        )
        if every_s is None or stop.wait(every_s):
            return total


def learn_model(
    config: CloudConfig,
    start_ns: int,
    end_ns: int,
    *,
    calendar: Path | None = None,
    progress: Progress | None = None,
) -> TrainedModel:
    """Train; the calendar's days (``calendar``, else the config's) are not learned."""
    days = config.calendar(calendar)
    with InfluxQLReader(config.query.reader_settings()) as reader:
        return train(
            reader,
            start_ns,
            end_ns,
            window_s=config.cloud.window_s,
            calendar=days,
            progress=progress,
        )


def train_model(
    config: CloudConfig, start_ns: int, end_ns: int, path: Path, *, calendar: Path | None = None
) -> TrainedModel:
    """Train and save, whatever it replaces (the demo's own model)."""
    model = learn_model(config, start_ns, end_ns, calendar=calendar)
    install_model(model, path, force=True)
    return model


def profiled(model: TrainedModel) -> int:
    """Terminals with at least `MIN_HISTORY_DAYS` of payments in the model."""
    hours = MIN_HISTORY_DAYS * NS_PER_DAY / NS_PER_S / 3600
    return sum(t.history_hours >= hours for t in model.baselines.terminals.values())


def install_model(model: TrainedModel, path: Path, *, force: bool) -> Path | None:
    """Save ``model`` at ``path`` (whole: written beside it, then renamed), the model
    there kept as ``<path>.previous`` (returned). Without ``force``, refuses a model
    that profiles too little or less than the one it replaces: `RuntimeFailure`."""
    previous = _load_previous(path)
    if not force:
        problem = _worse(model, previous)
        if problem is not None:
            kept = f"{path} is left as it is" if previous else f"nothing written to {path}"
            raise RuntimeFailure(
                f"not installing the new model: {problem}; {kept}: check the history range "
                "(--from/--to, --days) and that InfluxDB holds it, or pass --force"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    kept_as = None
    if path.exists():
        kept_as = path.with_name(path.name + ".previous")
        temp = kept_as.with_name(f".{kept_as.name}.tmp")
        shutil.copy2(path, temp)
        os.replace(temp, kept_as)  # a crash leaves either previous model whole
    model.save(path)  # itself written beside and renamed over
    return kept_as


def _load_previous(path: Path) -> TrainedModel | None:
    if not path.exists():
        return None
    try:
        return TrainedModel.load(path)
    except ValueError as exc:  # not ours, or another format: nothing to compare with
        log.warning("previous_model_unreadable", extra=kv(path=str(path), error=str(exc)))
        return None


def _worse(model: TrainedModel, previous: TrainedModel | None) -> str | None:
    terminals = profiled(model)
    if terminals < MIN_TERMINALS:
        return (
            f"it profiles {terminals} terminals with {MIN_HISTORY_DAYS} day of payments "
            f"(needs at least {MIN_TERMINALS})"
        )
    if previous is None:
        return None
    before = profiled(previous)
    if terminals < before * (1 - WORSE_FRACTION):
        return (
            f"it profiles {terminals} terminals, the current model {before} (fewer by more "
            f"than {WORSE_FRACTION:.0%})"
        )
    if previous.fraud is not None and model.fraud is None:
        return "it has no fraud model, the current model has one"
    return None

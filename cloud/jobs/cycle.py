"""One detection cycle: read a window, run every detector, root cause, alerts out.

    window data ──▶ health rules ─┐
                 ├▶ acquirers ────┤
                 ├▶ series watch ─┤
                 ├▶ payments ─────┼─▶ root cause ─▶ AlertManager ─▶ outputs
                 ├▶ payment KPIs ─┤   (site network, acquirer outage
                 └▶ card velocity ┘    explain the terminal symptoms)

`Detection.run(end_ns)` handles the window ``[end - window, end)``; a
scheduler calls it for each window end in order (live: every window, a
little after it ended; replay: over stored history).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloud.detectors.carried_state import Memory, load_memory, save_memory
from cloud.detectors.findings import Finding
from cloud.detectors.fleet_wide import (
    FleetSettings,
    acquirer_findings,
    down_acquirers,
    slow_together,
    velocity_findings,
)
from cloud.detectors.fraud_features import group_by_terminal
from cloud.detectors.kpis import Explained, KpiSettings, kpi_findings
from cloud.detectors.payments import PaymentSettings, payment_findings
from cloud.detectors.series_watch import SeriesSettings, SeriesWatch
from cloud.detectors.terminal_health import (
    HealthSettings,
    beats_to_reread,
    fold_heartbeats,
    health_findings,
    quiet_devices,
)
from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.alert_lifecycle import AlertManager
from cloud.reading.influxql_reader import InfluxQLReader
from cloud.reading.window import Shard, WindowData, fetch_window, read_changed
from runtime.logs import kv
from wire.calendar import Calendar
from wire.incidents import AlertType
from wire.messages import Alert
from wire.timestamps import NS_PER_S

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    window_s: int = 300
    health: HealthSettings = field(default_factory=HealthSettings)
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    kpis: KpiSettings = field(default_factory=KpiSettings)
    series: SeriesSettings = field(default_factory=SeriesSettings)
    calendar: Calendar | None = None  # the operator's sale, holiday, closed days (kpis)


@dataclass(slots=True)
class CycleReport:
    end_ns: int
    findings: list[Finding]
    alerts: list[Alert]
    read_s: float
    detect_s: float
    terminals: int


class Detection:
    def __init__(
        self,
        reader: InfluxQLReader,
        model: TrainedModel | None,
        settings: DetectionSettings,
        *,
        shard: Shard | None = None,
        state_dir: Path | None = None,
        alerts: AlertManager | None = None,
    ) -> None:
        self.reader = reader
        self.model = model
        self.settings = settings
        self.shard = shard or Shard()
        self._memory_path = None if state_dir is None else state_dir / "memory.json"
        self.memory: Memory = load_memory(self._memory_path)
        self.alerts = alerts or AlertManager(
            state_path=None if state_dir is None else state_dir / "alerts.json"
        )
        self.series = SeriesWatch(reader, settings.series, settings.window_s, self.shard)

    @property
    def window_ns(self) -> int:
        return self.settings.window_s * NS_PER_S

    def run(self, end_ns: int) -> CycleReport:
        """Detect over ``[end - window, end)`` and return what was found and alerted."""
        started = time.monotonic()
        data = self.fetch(end_ns)
        read_s = time.monotonic() - started
        findings = self.detect(data)
        alerts = self.alerts.step(end_ns, findings)
        save_memory(self._memory_path, self.memory)
        report = CycleReport(
            end_ns=end_ns,
            findings=findings,
            alerts=alerts,
            read_s=read_s,
            detect_s=time.monotonic() - started - read_s,
            terminals=len(self.memory.devices),
        )
        log.debug(
            "detection_cycle",
            extra=kv(
                end_ns=end_ns,
                findings=len(findings),
                alerts=len(alerts),
                read_s=round(read_s, 3),
                detect_s=round(report.detect_s, 3),
            ),
        )
        return report

    def fetch(self, end_ns: int) -> WindowData:
        """The window's data: with a memory, what changed since (cloud.reading.window)."""
        health, memory = self.settings.health, self.memory
        start_ns = end_ns - self.window_ns
        carried = bool(memory.devices)  # the first cycle of a job reads the lookback once
        data = fetch_window(self.reader, start_ns, end_ns, shard=self.shard, carried=carried)
        if carried:
            reread = beats_to_reread(memory, data, health)
            quiet = quiet_devices(memory, data, reread, health)
            read_changed(self.reader, data, beats=reread, states=quiet)
        return data

    def detect(self, data: WindowData) -> list[Finding]:
        """Every detector over one window's data; updates the memory."""
        settings = self.settings
        fold_heartbeats(self.memory, data, settings.health)
        down = down_acquirers(
            data.acquirers,
            self.memory,
            self.model,
            settings.fleet,
            start_ns=data.start_ns,
            end_ns=data.end_ns,
        )
        findings = health_findings(
            self.memory, data.states, self.model, data.end_ns, settings.health
        )
        windows = group_by_terminal(data.payments)
        findings += payment_findings(
            windows,
            self.memory,
            self.model,
            set(down),
            data.end_ns,
            settings.payments,
            start_ns=data.start_ns,
        )
        explained = Explained.of(findings, data.states, set(down))
        findings += kpi_findings(
            windows,
            self.memory,
            self.model,
            explained,
            data.start_ns,
            data.end_ns,
            settings.kpis,
            calendar=settings.calendar,
        )
        # terminals of one acquirer slowing together: the acquirer degrading (root cause)
        slow = slow_together(findings, data.acquirers, down, settings.fleet)
        if slow:
            findings = [
                f
                for f in findings
                if not (f.type == AlertType.LATENCY_SPIKE and f.acquirer in slow)
            ]
            down |= slow
        if settings.series.enabled:
            findings += self.series.findings(data, findings, set(down))
        if self.shard.leads:
            findings += acquirer_findings(down, data.end_ns)
            # velocity needs the history's cards normally used at several sites (fleet
            # cards): without a model it would flag them all, so it waits for training
            if data.fleet_payments is not None and self.model is not None:
                velocity = velocity_findings(
                    data.fleet_payments, self.memory, self.model, data.end_ns, settings.fleet
                )
                findings = _outliers_of_travelling_cards_dropped(findings, velocity) + velocity
        return findings


def _outliers_of_travelling_cards_dropped(
    findings: list[Finding], velocity: list[Finding]
) -> list[Finding]:
    """A stolen card's big payments are part of its velocity alert (root cause), not more."""
    cards = {finding.subject for finding in velocity}
    return [
        f
        for f in findings
        if not (f.type is AlertType.AMOUNT_OUTLIER and f.evidence.get("card") in cards)
    ]

"""A degrading acquirer is raised from its latency trend, before its declines start.

Unit level, with a model built in memory. A synthetic acquirer has sites of one
to four terminals; each terminal takes payments at its hour-of-day rate (open
07-21, a midday and an evening rush); each authorisation's latency is
log-normal around the acquirer's median, times its site's network offset
(fixed per site), times an hour-of-day factor (busier hours are slower), with
a small slow tail, as `firmware_sim.authorisation` draws them. A day and a half
of quiet traffic trains the baselines the way `tillpulse cloud train` does
(each terminal's ln-median and IQR spread, the acquirer's median and p95).

The scenario of issue #15: latency creeps 1x -> 5x over 90 minutes, then
system declines (91/96) rise 5% -> 40% over 30 minutes. The whole cycle
(`Detection.detect`, less the series watch, which reads InfluxDB itself) runs
on each window and its findings go through an `AlertManager`, so the test sees
what the operator would: one acquirer alert, WARNING while only slow,
escalated to CRITICAL when the declines follow, and how many terminal alerts
came before it (counted on busier terminals, 40-90 payments an hour, where
they have the evidence to alert at all).

Run ``python -m tests.cloud.test_degrading_acquirer`` for the figures in
docs/detectors.md (delays over seeds, false alerts per 1,000 acquirer-hours).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from cloud.detectors.carried_state import Memory, load_memory, save_memory
from cloud.detectors.findings import Finding
from cloud.detectors.fleet_wide import AcquirerVerdict, FleetSettings, down_acquirers, slow_together
from cloud.detectors.series_watch import SeriesSettings
from cloud.detectors.trained_model import (
    AcquirerBaseline,
    TerminalBaseline,
    TrainedModel,
)
from cloud.jobs.alert_lifecycle import AlertManager
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings, Table
from cloud.reading.window import (
    PAYMENT_COLUMNS,
    SENSOR_COLUMNS,
    STATUS_COLUMNS,
    SYSTEM_DECLINE_CODES,
    AcquirerWindow,
    WindowData,
)
from testkit import models
from wire.incidents import AlertType
from wire.messages import AlertStatus, Severity
from wire.timestamps import NS_PER_HOUR, NS_PER_S, parse_iso

WINDOW_S = 300
WINDOW_NS = WINDOW_S * NS_PER_S
DAY_NS = 24 * NS_PER_HOUR
TRAIN_FROM = parse_iso("2026-11-02T00:00:00Z")  # a Monday
TRAIN_TO = TRAIN_FROM + 36 * NS_PER_HOUR
RAMP_FROM = parse_iso("2026-11-04T10:00:00Z")  # the Wednesday after
RAMP_MIN = 90
DECLINE_MIN = 30
ISSUER_DECLINE_RATE = 0.04
# firmware_sim.authorisation.DECLINE_CODES: issuers answer 91/96 now and then too
ISSUER_CODES = {"05": 38, "51": 30, "55": 12, "54": 7, "61": 6, "14": 3, "91": 2.5, "96": 1.5}
# the acquirers of firmware_sim.authorisation: median ms, ln-spread, slow-tail share
LATENCY_SHAPES = {"acq-a": (180.0, 0.35, 0.004), "acq-b": (260.0, 0.4, 0.006)}
LATENCY_SHAPES["acq-c"] = (350.0, 0.5, 0.01)
SITE_OFFSET_SIGMA = 0.2  # ln spread of the sites' network latency
RUSH_SLOWDOWN = 0.12  # ln of the extra latency at the busiest hour of a quiet day
TERMINAL_ALERTS = frozenset(
    {AlertType.LATENCY_SPIKE, AlertType.APPROVAL_DROP, AlertType.DECLINE_MIX}
)

FLEET = FleetSettings()

Conditions = Callable[[int, int], tuple[float, float]]  # (t, site) -> latency x, system share


def quiet(_t: int, _site: int) -> tuple[float, float]:
    return 1.0, 0.0


def busy(t_ns: int) -> float:
    """0..1 over the day: the midday (12-14) and evening (17-19) rushes are 1."""
    hour = (t_ns % DAY_NS) / NS_PER_HOUR
    return max(0.0, 1 - abs(hour - 13) / 1.5, 1 - abs(hour - 18) / 1.5)


def open_share(t_ns: int) -> float:
    hour = (t_ns % DAY_NS) / NS_PER_HOUR
    return 0.0 if not 7 <= hour < 21 else 0.4 + 0.6 * busy(t_ns)


class Payment(NamedTuple):
    """One row of the ``payment`` measurement as `cloud.reading.window` selects it."""

    time: int
    device: str
    site: str
    acquirer: str
    seq: int
    card_token: str
    amount_minor: int
    method: str
    mcc: str
    response_code: str
    approved: bool
    auth_latency_ms: float
    offline: bool


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    terminals: tuple[str, ...]
    peak_per_hour: float  # each terminal's
    offset: float  # ln of its network's extra latency


@dataclass(slots=True)
class Acquirer:
    name: str
    median_ms: float
    sigma: float
    slow_tail: float
    sites: list[Site]
    rng: np.random.Generator
    rush_slowdown: float = RUSH_SLOWDOWN
    conditions: Conditions = quiet
    seq: int = 0

    def payments(self, start_ns: int) -> list[Payment]:
        """The online payments of the window from ``start_ns``, in time order."""
        rows: list[Payment] = []
        for index, site in enumerate(self.sites):
            mean = site.peak_per_hour * open_share(start_ns) * WINDOW_S / 3600
            for device in site.terminals:
                count = self.rng.poisson(mean)
                for ts in self.rng.uniform(start_ns, start_ns + WINDOW_NS, count):
                    rows.append(self._payment(int(ts), device, index))
        return sorted(rows)

    def _payment(self, ts: int, device: str, index: int) -> Payment:
        rng, site = self.rng, self.sites[index]
        factor, system = self.conditions(ts, index)
        ln_ms = site.offset + self.rush_slowdown * busy(ts) + self.sigma * rng.standard_normal()
        latency = self.median_ms * factor * math.exp(ln_ms)
        if rng.random() < self.slow_tail:
            latency *= rng.uniform(5.0, 20.0)
        if rng.random() < system:
            code = str(rng.choice(SYSTEM_DECLINE_CODES))
        elif rng.random() < ISSUER_DECLINE_RATE:
            code = str(rng.choice(list(ISSUER_CODES), p=_shares(ISSUER_CODES)))
        else:
            code = "00"
        self.seq += 1
        return Payment(ts, device, site.name, self.name, self.seq, f"card{self.seq}", 2500,
                       "chip", "5411", code, code == "00", round(latency, 1), False)  # fmt: skip


def _shares(weights: dict[str, float]) -> list[float]:
    total = sum(weights.values())
    return [w / total for w in weights.values()]


def acquirer(name: str, sites: int, seed: int, peak: tuple[float, float] = (8, 40)) -> Acquirer:
    """``name``'s latency shape at ``sites`` sites of 1-4 terminals, each its own offset."""
    rng = np.random.default_rng(seed)
    median, sigma, tail = LATENCY_SHAPES[name]
    layout = [
        Site(
            f"{name}-s{i}",
            tuple(f"{name}-s{i}-t{t}" for t in range(int(rng.integers(1, 5)))),
            float(rng.uniform(*peak)),
            float(rng.normal(0.0, SITE_OFFSET_SIGMA)),
        )
        for i in range(sites)
    ]
    return Acquirer(name, median, sigma, tail, layout, rng)


def table(rows: list[Payment]) -> Table:
    return Table(
        {name: [getattr(row, name) for row in rows] for name in ("time", *PAYMENT_COLUMNS)}
    )


def acquirer_window(rows: list[Payment]) -> AcquirerWindow:
    """What `cloud.reading.window` asks the server for, computed over the rows."""
    by_site: dict[str, list[Payment]] = {}
    for row in rows:
        by_site.setdefault(row.site, []).append(row)
    return AcquirerWindow(
        count=len(rows),
        approved=sum(row.approved for row in rows),
        latency_median_ms=statistics.median(row.auth_latency_ms for row in rows),
        sites=len(by_site),
        failing_sites=sum(2 * sum(not r.approved for r in s) > len(s) for s in by_site.values()),
        system_declines=sum(row.response_code in SYSTEM_DECLINE_CODES for row in rows),
        site_latency_ms={
            site: statistics.median(row.auth_latency_ms for row in payments)
            for site, payments in by_site.items()
        },
    )


def windows(acq: Acquirer, start_ns: int, end_ns: int) -> Iterator[tuple[int, list[Payment]]]:
    for t in range(start_ns, end_ns, WINDOW_NS):
        yield t, acq.payments(t)


def trained(acquirers: list[Acquirer]) -> TrainedModel:
    """Baselines from quiet traffic, as `cloud.jobs.training` figures them."""
    terminals: dict[str, TerminalBaseline] = {}
    usual: dict[str, AcquirerBaseline] = {}
    for acq in acquirers:
        conditions, acq.conditions = acq.conditions, quiet
        rows = [row for _, rows in windows(acq, TRAIN_FROM, TRAIN_TO) for row in rows]
        acq.conditions = conditions
        latency = np.array([row.auth_latency_ms for row in rows])
        system = sum(row.response_code in SYSTEM_DECLINE_CODES for row in rows)
        usual[acq.name] = AcquirerBaseline(
            decline_rate=ISSUER_DECLINE_RATE,
            system_decline_rate=(system + 1) / (len(rows) + 21),  # training's Beta prior
            latency_median_ms=float(np.median(latency)),
            latency_p95_ms=float(np.percentile(latency, 95)),
        )
        for site in acq.sites:
            for device in site.terminals:
                own = [row.auth_latency_ms for row in rows if row.device == device]
                terminals[device] = terminal_baseline(device, site.name, acq.name, own)
    return _model(terminals, usual)


def terminal_baseline(
    device: str, site: str, acquirer_id: str, latency: list[float]
) -> TerminalBaseline:
    p25, p50, p75 = np.percentile(latency, [25, 50, 75])
    return models.terminal_baseline(
        site,
        acquirer=acquirer_id,
        profile=-1,
        history_hours=72.0,  # its own baseline; too few weeks for volume to judge
        **_usual_payments(),
        latency_log_median=math.log(p50),
        latency_log_sigma=max(0.05, math.log(p75 / p25) / 1.349),
    )


def _usual_payments() -> dict[str, Any]:
    return dict(
        rate_per_hour=[10.0] * 168,
        decline_rate=ISSUER_DECLINE_RATE,
        amount_log_median=math.log(2500),
        amount_log_sigma=0.5,
        temperature_p50=30.0,
        temperature_p99=40.0,
        decline_codes=dict(zip(ISSUER_CODES, _shares(ISSUER_CODES), strict=True)),
    )


def _model(
    terminals: dict[str, TerminalBaseline], usual: dict[str, AcquirerBaseline]
) -> TrainedModel:
    return models.model_of(
        terminals,
        trained_from_ns=TRAIN_FROM,
        trained_to_ns=TRAIN_TO,
        window_s=WINDOW_S,
        fleet=models.usual_baseline(**_usual_payments()),
        acquirers=usual,
    )


# ------------------------------------------------------------------ the scenario of #15


def degrading(t_ns: int, _site: int) -> tuple[float, float]:
    """Latency 1x -> 5x over RAMP_MIN, then system declines 5% -> 40% over DECLINE_MIN."""
    minutes = (t_ns - RAMP_FROM) / NS_PER_S / 60
    if minutes < 0:
        return 1.0, 0.0
    if minutes < RAMP_MIN:
        return 1.0 + 4.0 * minutes / RAMP_MIN, 0.0
    declining = min(1.0, (minutes - RAMP_MIN) / DECLINE_MIN)
    return 5.0, 0.05 + 0.35 * declining


@dataclass(slots=True)
class Replay:
    """What the cycle raised over the scenario, minute by minute of the ramp."""

    first_minute: dict[Severity, float] = field(default_factory=dict)
    factor_at_warning: float = 0.0
    # its terminals' alerts before it was raised, and their findings after (summaries)
    terminal_before: list[str] = field(default_factory=list)
    terminal_after: list[str] = field(default_factory=list)
    outage_alerts: list[tuple[str, Severity, AlertStatus]] = field(default_factory=list)
    warning_summary: str = ""


def replay(
    seed: int,
    sites: int = 6,
    name: str = "acq-b",
    peak: tuple[float, float] = (8, 40),
    fleet: FleetSettings = FLEET,
) -> Replay:
    acq = acquirer(name, sites, seed, peak)
    model = trained([acq])
    acq.conditions = degrading
    # never contacted: detect() works on the window it is given
    reader = InfluxQLReader(ReaderSettings(url="http://127.0.0.1:9", database="unread"))
    # the series watch reads its own history from InfluxDB: not part of this unit test
    settings = DetectionSettings(
        window_s=WINDOW_S, fleet=fleet, series=SeriesSettings(enabled=False)
    )
    detection = Detection(reader, model, settings)
    manager = AlertManager(state_path=None)
    out = Replay()
    for start, rows in windows(acq, RAMP_FROM - 2 * NS_PER_HOUR, RAMP_FROM + 3 * NS_PER_HOUR):
        data = window_data(start, rows, acq.name)
        findings = detection.detect(data)
        minute = (data.end_ns - RAMP_FROM) / NS_PER_S / 60
        for finding in findings:
            if finding.type == AlertType.ACQUIRER_OUTAGE:
                if finding.severity not in out.first_minute:
                    out.first_minute[finding.severity] = minute
                if finding.severity is Severity.WARNING and not out.warning_summary:
                    out.warning_summary = finding.summary
                    out.factor_at_warning = degrading(data.end_ns, 0)[0]
            elif finding.type in TERMINAL_ALERTS and out.first_minute:
                out.terminal_after.append(finding.summary)
        for alert in manager.step(data.end_ns, findings):
            if alert.type == AlertType.ACQUIRER_OUTAGE:
                out.outage_alerts.append((alert.alert_id, alert.severity, alert.status))
            elif alert.type in TERMINAL_ALERTS and not out.first_minute:
                out.terminal_before.append(alert.summary)
    return out


def window_data(start: int, rows: list[Payment], name: str) -> WindowData:
    return WindowData(
        start_ns=start,
        end_ns=start + WINDOW_NS,
        payments=table(rows),
        statuses=Table({name: [] for name in ("time", *STATUS_COLUMNS)}),
        sensors=Table({name: [] for name in ("time", *SENSOR_COLUMNS)}),
        states={},
        acquirers={name: acquirer_window(rows)} if rows else {},
    )


SEEDS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def replays() -> dict[int, Replay]:
    return {seed: replay(seed) for seed in SEEDS}


def test_the_latency_ramp_is_raised_as_degrading_well_before_declines_start(
    replays: dict[int, Replay],
) -> None:
    for seed, run in replays.items():
        warning = run.first_minute[Severity.WARNING]
        assert 0 < warning <= 45, (seed, run.first_minute)
        assert "degrading: latency" in run.warning_summary and "rising for" in run.warning_summary


def test_it_escalates_to_critical_once_declines_follow_as_one_alert(
    replays: dict[int, Replay],
) -> None:
    for seed, run in replays.items():
        # ~20 payments a window: at 5-15 % system declines, one or two a window
        assert RAMP_MIN < run.first_minute[Severity.CRITICAL] <= RAMP_MIN + 15, (seed, run)
        firing = [(s, st) for _, s, st in run.outage_alerts if st is AlertStatus.FIRING]
        assert firing == [
            (Severity.WARNING, AlertStatus.FIRING),
            (Severity.CRITICAL, AlertStatus.FIRING),
        ], seed
        assert len({alert_id for alert_id, _, _ in run.outage_alerts}) == 1, seed


BUSY = (40.0, 90.0)  # payments an hour a terminal at peak


def test_its_terminals_raise_few_alerts_before_and_none_once_it_is_raised() -> None:
    for seed in SEEDS:
        run = replay(seed, 8, "acq-a", BUSY)
        assert run.terminal_after == [], seed
        assert len(run.terminal_before) <= 4, (seed, run.terminal_before)
    # without the trend, its terminals' own latency tests crossing together raise it (and
    # fold into it) before it declines, as a warning
    spikes = replay(1, 8, "acq-a", BUSY, FleetSettings(degrading_threshold=math.inf))
    assert spikes.first_minute[Severity.WARNING] < RAMP_MIN
    assert len(spikes.terminal_before) <= 4 and spikes.terminal_after == []


# ------------------------------------------------------------------ no false alarms


@dataclass(slots=True)
class Watched:
    """How often an acquirer was raised over a replay of its open hours."""

    incidents: int = 0  # times it went from not raised to raised
    open_hours: float = 0.0

    def add(self, other: Watched) -> None:
        self.incidents += other.incidents
        self.open_hours += other.open_hours

    @property
    def per_thousand_hours(self) -> float:
        return 1000 * self.incidents / self.open_hours


def watched(acq: Acquirer, start_ns: int, end_ns: int) -> Watched:
    """Train on quiet traffic, then replay ``acq`` (under its conditions) window by window."""
    model = trained([acq])
    memory, out, before = Memory(), Watched(), False
    for t, rows in windows(acq, start_ns, end_ns):
        if not rows:
            continue
        out.open_hours += WINDOW_S / 3600
        down = down_acquirers(
            {acq.name: acquirer_window(rows)}, memory, model, FLEET,
            start_ns=t, end_ns=t + WINDOW_NS,
        )  # fmt: skip
        out.incidents += acq.name in down and not before
        before = acq.name in down
    return out


QUIET_FROM = TRAIN_TO + 12 * NS_PER_HOUR  # the Tuesday
# (latency shape, sites, slow-tail share or None for its own)
QUIET_SHAPES = (("acq-a", 2, None), ("acq-b", 3, None), ("acq-c", 6, None),
                ("acq-a", 12, None), ("acq-b", 6, 0.03))  # fmt: skip


def quiet_weeks(weeks: int, rush: float = RUSH_SLOWDOWN, seed: int = 100) -> Watched:
    total = Watched()
    for i, (name, sites, tail) in enumerate(QUIET_SHAPES):
        acq = acquirer(name, sites, seed + i)
        acq.rush_slowdown = rush
        acq.slow_tail = acq.slow_tail if tail is None else tail
        total.add(watched(acq, QUIET_FROM, QUIET_FROM + weeks * 7 * DAY_NS))
    return total


def test_quiet_weeks_with_realistic_latency_noise_raise_nothing() -> None:
    week = quiet_weeks(1)
    assert week.open_hours > 400
    assert week.incidents == 0, week


def test_a_daily_rush_that_slows_it_down_is_not_raised() -> None:
    rush = quiet_weeks(1, rush=math.log(1.4))  # 1.4 x at the midday and evening peaks
    assert rush.incidents == 0, rush


def one_day(acq: Acquirer, conditions: Conditions) -> Watched:
    acq.conditions = conditions
    return watched(acq, QUIET_FROM, QUIET_FROM + DAY_NS)


def from_ten(factor: float, minutes: float, sites: Callable[[int], bool]) -> Conditions:
    """``factor`` x latency at the sites chosen, for ``minutes`` from 10:00 (+ any seconds)."""

    def conditions(t_ns: int, site: int) -> tuple[float, float]:
        since = (t_ns - QUIET_FROM - 10 * NS_PER_HOUR) / NS_PER_S / 60
        return (factor if 0 <= since < minutes and sites(site) else 1.0), 0.0

    return conditions


@pytest.mark.parametrize("sites", [2, 3, 6])
def test_one_slow_site_is_its_network_not_the_acquirer(sites: int) -> None:
    slow_site = one_day(acquirer("acq-b", sites, 7), from_ten(5.0, 11 * 60, lambda s: s == 0))
    assert slow_site.incidents == 0
    # the same acquirer slow at all its sites for as long is raised
    everywhere = one_day(acquirer("acq-b", sites, 7), from_ten(5.0, 11 * 60, lambda s: True))
    assert everywhere.incidents == 1


@pytest.mark.parametrize("offset_s", [0, 60, 150, 240])
def test_a_five_minute_blip_is_not_raised_however_it_falls_on_the_windows(offset_s: int) -> None:
    for sites in (3, 6, 12):
        acq = acquirer("acq-a", sites, offset_s + sites)
        blip = one_day(acq, shifted(from_ten(5.0, 5, lambda s: True), offset_s))
        assert blip.incidents == 0, sites
        assert one_day(acq, shifted(from_ten(5.0, 20, lambda s: True), offset_s)).incidents == 1


def shifted(conditions: Conditions, seconds: int) -> Conditions:
    return lambda t_ns, site: conditions(t_ns - seconds * NS_PER_S, site)


def raised_at(acq: Acquirer, model: TrainedModel, memory_file: Path | None) -> float | None:
    """Minute of the ramp it is raised at; with a file, the memory is saved and loaded
    between windows, as `tillpulse cloud detect` run from cron does."""
    memory = Memory()
    for t, rows in windows(acq, RAMP_FROM - NS_PER_HOUR, RAMP_FROM + RAMP_MIN * 60 * NS_PER_S):
        if memory_file is not None:
            save_memory(memory_file, memory)
            memory = load_memory(memory_file)
        window = {acq.name: acquirer_window(rows)}
        if down_acquirers(window, memory, model, FLEET, start_ns=t, end_ns=t + WINDOW_NS):
            return (t + WINDOW_NS - RAMP_FROM) / NS_PER_S / 60
    return None


def test_its_evidence_is_carried_across_restarts(tmp_path: Path) -> None:
    acq = acquirer("acq-c", 6, 3)
    model = trained([acq])
    acq.conditions = degrading
    rng_state = acq.rng.bit_generator.state
    straight = raised_at(acq, model, None)
    acq.rng.bit_generator.state = rng_state  # the same payments again
    assert straight is not None
    assert raised_at(acq, model, tmp_path / "memory.json") == straight


def _report_scenario() -> None:
    for name in LATENCY_SHAPES:
        for sites, peak in ((3, (8.0, 40.0)), (6, (8.0, 40.0)), (12, (8.0, 40.0)), (8, BUSY)):
            runs = [replay(seed, sites, name, peak) for seed in range(1, 11)]
            warning = [run.first_minute[Severity.WARNING] for run in runs]
            critical = [run.first_minute[Severity.CRITICAL] - RAMP_MIN for run in runs]
            factors = [run.factor_at_warning for run in runs]
            before = [len(run.terminal_before) for run in runs]
            median = statistics.median(warning)
            print(
                f"{name} {sites} sites, {peak[0]:.0f}-{peak[1]:.0f}/h a terminal: WARNING after "
                f"{min(warning):.0f}-{max(warning):.0f} min (median {median:.0f}) "
                f"at {min(factors):.1f}-{max(factors):.1f}x; CRITICAL {min(critical):.0f}-"
                f"{max(critical):.0f} min after declines start; terminal alerts before: "
                f"{sum(before)} in 10 runs (max {max(before)}), after: "
                f"{sum(len(run.terminal_after) for run in runs)}"
            )


def _report_without_the_trend() -> None:
    off = FleetSettings(degrading_threshold=math.inf)
    for name in LATENCY_SHAPES:
        runs = [replay(seed, 8, name, BUSY, off) for seed in range(1, 11)]
        raised = [min(run.first_minute.values()) for run in runs]
        before = [len(run.terminal_before) for run in runs]
        print(
            f"{name} 8 busy sites without the trend: raised after {min(raised):.0f}-"
            f"{max(raised):.0f} min, terminal alerts before: {min(before)}-{max(before)} a run"
        )


def spike(site: str, acquirer: str) -> Finding:
    return Finding(
        type=AlertType.LATENCY_SPIKE,
        detector="kpi.latency_spike",
        severity=Severity.WARNING,
        score=0.6,
        ts=TRAIN_TO,
        site=site,
        device=f"{site}-pos1",
        acquirer=acquirer,
        summary="slow",
    )


def served(sites: int) -> AcquirerWindow:
    return AcquirerWindow(
        count=10 * sites,
        approved=10 * sites,
        latency_median_ms=900.0,
        sites=sites,
        failing_sites=0,
        system_declines=0,
    )


def test_terminals_slowing_together_at_most_of_its_sites_are_the_acquirer_degrading() -> None:
    """Their own latency tests cross in one window, a window or two before the acquirer's
    trend is conclusive: raised as the acquirer (a warning), they fold into it."""
    findings = [spike("s1", "acq-x"), spike("s2", "acq-x"), spike("s3", "acq-x")]
    acquirers = {"acq-x": served(4), "acq-y": served(6)}
    together = slow_together(findings, acquirers, {}, FleetSettings())
    assert set(together) == {"acq-x"}
    assert together["acq-x"].severity is Severity.WARNING
    assert "3 of its 4 sites" in together["acq-x"].why


@pytest.mark.parametrize(
    ("sites_slow", "served_sites"),
    [(1, 2), (2, 6)],
    ids=["one site: its own network", "a third of its sites"],
)
def test_a_few_slow_terminals_are_their_own_fault(sites_slow: int, served_sites: int) -> None:
    findings = [spike(f"s{n}", "acq-x") for n in range(sites_slow)]
    assert slow_together(findings, {"acq-x": served(served_sites)}, {}, FleetSettings()) == {}


def test_an_acquirer_already_raised_is_not_raised_again() -> None:
    findings = [spike("s1", "acq-x"), spike("s2", "acq-x")]
    down = {"acq-x": AcquirerVerdict("failing", Severity.CRITICAL)}
    assert slow_together(findings, {"acq-x": served(2)}, down, FleetSettings()) == {}


if __name__ == "__main__":
    _report_scenario()
    _report_without_the_trend()
    for label, rush in (("quiet", RUSH_SLOWDOWN), ("rush 1.4x", math.log(1.4)),
                        ("rush 1.5x", math.log(1.5))):  # fmt: skip
        weeks = quiet_weeks(4, rush=rush)
        print(
            f"{label}: {weeks.incidents} raised in {weeks.open_hours:.0f} open acquirer-hours, "
            f"{weeks.per_thousand_hours:.2f} per 1,000"
        )

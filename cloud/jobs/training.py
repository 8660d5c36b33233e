"""`tillpulse cloud train`: learn baselines, profiles and the fraud model from history.

Seasonal volume, amounts, temperatures and each acquirer's figures are
aggregated by InfluxDB (one row per terminal and hour, or per terminal), so
training on weeks of a large fleet moves little data. The fraud model needs
raw payments: it reads the last ``fraud_hours`` of the history in windows.
History is assumed mostly normal; the robust statistics (medians,
quantiles) and the IsolationForest tolerate a few anomalies in it. What is
known not to be normal is left out of the volume baselines: the operator
calendar's days (`wire.calendar`), and the hours before a change of a
terminal's opening hours (`cloud.detectors.volume_baseline`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest

from cloud.detectors.fraud_features import FEATURES, feature_matrix, group_by_terminal
from cloud.detectors.trained_model import (
    HOURS_PER_WEEK,
    AcquirerBaseline,
    Baseline,
    Baselines,
    TerminalBaseline,
    TrainedModel,
    majority_profile,
    metadata,
)
from cloud.detectors.volume_baseline import DailyHistory, VolumeFit, learn_volume
from cloud.jobs.progress import Progress
from cloud.reading.influxql_reader import InfluxQLReader, Series
from cloud.reading.window import PAYMENT_COLUMNS, system_declines_by_acquirer
from runtime.logs import kv
from wire.calendar import Calendar
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S

log = logging.getLogger(__name__)

MAX_PROFILES: Final = 8
IQR_TO_SIGMA: Final = 1.349  # a normal distribution's interquartile range in sigmas
DEFAULT_TEMPERATURE: Final = (30.0, 40.0)
MIN_FRAUD_WINDOWS: Final = 50  # fewer: too few to say what is unusual
DECLINE_PRIOR: Final = (1.0, 20.0)  # Beta prior: a few declines in twenty, before data
DECLINE_CODE_PRIOR: Final = 20.0  # a terminal's decline-code mix: its merchant category's, worth 20


class HistoryTooShortError(ValueError):
    """The span given to `train` cannot make a model."""


def train(
    reader: InfluxQLReader,
    start_ns: int,
    end_ns: int,
    *,
    window_s: int,
    fraud_hours: float = 48.0,
    seed: int = 0,
    calendar: Calendar | None = None,
    progress: Progress | None = None,
) -> TrainedModel:
    """The model from ``[start, end)`` of history; the hours of ``calendar``'s days are
    left out of the volume baselines (a sale is not a usual day)."""
    if end_ns - start_ns < NS_PER_HOUR:
        raise HistoryTooShortError("train needs at least an hour of history")
    progress = progress or Progress()
    hourly = _hourly_volume(reader, start_ns, end_ns, progress)
    amounts = _per_device(
        reader,
        "SELECT percentile(amount_minor, 25), median(amount_minor), "
        'percentile(amount_minor, 75) FROM "payment"',
        start_ns,
        end_ns,
        "offline = 0",
    )
    temperatures = _per_device(
        reader,
        'SELECT median(temperature_c), percentile(temperature_c, 99) FROM "terminal_status"',
        start_ns,
        end_ns,
    )
    latencies = _per_device(
        reader,
        "SELECT percentile(auth_latency_ms, 25), median(auth_latency_ms), "
        'percentile(auth_latency_ms, 75) FROM "payment"',
        start_ns,
        end_ns,
        "offline = 0",
    )
    volume = learn_volume(
        {
            d: daily_history(
                h.counts, h.first_ns, end_ns, site=h.site, mcc=h.mcc, calendar=calendar
            )
            for d, h in hourly.items()
        }
    )
    terminals = _terminal_baselines(hourly, volume, amounts, temperatures, end_ns)
    _add_latencies(terminals, latencies)
    _add_decline_codes(terminals, reader, start_ns, end_ns)
    profiles_model, labels = _fit_profiles(terminals, seed)
    for device, profile in labels.items():
        terminals[device].profile = profile
    profiles = [
        _median_baseline([terminals[d] for d, p in labels.items() if p == k])
        for k in range(profiles_model.n_clusters if profiles_model is not None else 0)
    ]
    fraud_start = max(start_ns, end_ns - int(fraud_hours * NS_PER_HOUR))
    fraud, multi_site_cards, fraud_windows = _fit_fraud(
        reader, fraud_start, end_ns, window_s, seed, progress=progress
    )
    baselines = Baselines(
        trained_from_ns=start_ns,
        trained_to_ns=end_ns,
        window_s=window_s,
        terminals=terminals,
        profiles=profiles,
        profile_by_mcc=majority_profile(labels, {d: t.mcc for d, t in terminals.items()}),
        fleet=_median_baseline(list(terminals.values())) if terminals else _empty_baseline(),
        acquirers=_acquirer_baselines(reader, start_ns, end_ns),
        multi_site_cards=multi_site_cards,
    )
    log.info(
        "model_trained",
        extra=kv(terminals=len(terminals), profiles=len(profiles), fraud=fraud is not None),
    )
    return TrainedModel(
        baselines,
        profiles_model,
        fraud,
        metadata(
            trained_at=datetime.now(tz=UTC).isoformat(),
            history_from=_iso(start_ns),
            history_to=_iso(end_ns),
            terminals=len(terminals),
            payments=sum(h.payments for h in hourly.values()),
            window_s=window_s,
            fraud_features=list(FEATURES),
            fraud_from=_iso(fraud_start),
            fraud_windows=fraud_windows,  # terminal-windows with payments it learned from
        ),
    )


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).isoformat()


class _Hourly:
    def __init__(self) -> None:
        self.site = ""
        self.acquirer = ""
        self.mcc = ""
        self.counts: dict[int, int] = {}  # start of the hour (ns) -> online payments
        self.payments = 0
        self.declined = 0
        self.first_ns = 0  # start of the first day of the history it took payments


def _hourly_volume(
    reader: InfluxQLReader, start_ns: int, end_ns: int, progress: Progress
) -> dict[str, _Hourly]:
    """Payments per terminal and hour of the week, a day per query."""
    per_device: dict[str, _Hourly] = defaultdict(_Hourly)
    day_start = start_ns - start_ns % NS_PER_HOUR
    for lo in progress.track(range(day_start, end_ns, NS_PER_DAY), "train: days of history"):
        hi = min(lo + NS_PER_DAY, end_ns)
        series = reader.query(
            'SELECT count(approved), sum(approved), last(mcc) FROM "payment" '
            f"WHERE time >= {lo} AND time < {hi} AND offline = 0 "
            "GROUP BY time(1h), device, site, acquirer"
        )
        for s in series:
            hourly = per_device[s.tags["device"]]
            hourly.first_ns = hourly.first_ns or max(start_ns, lo)
            hourly.site, hourly.acquirer = s.tags.get("site", ""), s.tags.get("acquirer", "")
            for ts, payments, approved, mcc in s.values:
                count = int(payments or 0)
                hourly.counts[int(ts)] = count
                hourly.payments += count
                hourly.declined += count - int(approved or 0)
                if mcc:
                    hourly.mcc = str(mcc)
    return per_device


def daily_history(
    counts: dict[int, int],
    first_ns: int,
    end_ns: int,
    *,
    site: str,
    mcc: str,
    calendar: Calendar | None,
) -> DailyHistory:
    """A terminal's payments per clock hour and day, from ``counts`` (start of the hour ->
    online payments; a missing hour had none) over ``[first, end)``; an hour outside that
    span, or on one of ``calendar``'s days for its site and category, is not valid."""
    first_day = first_ns - first_ns % NS_PER_DAY
    days = max(1, -(-(end_ns - first_day) // NS_PER_DAY))
    table = np.zeros((days, 24))
    valid = np.zeros((days, 24), dtype=bool)
    for day in range(days):
        day_ns = first_day + day * NS_PER_DAY
        if calendar is not None and calendar.on(site, mcc, day_ns) is not None:
            continue  # not a usual day: neither learned nor lent
        for hour in range(24):
            hour_ns = day_ns + hour * NS_PER_HOUR
            valid[day, hour] = first_ns <= hour_ns < end_ns
            table[day, hour] = counts.get(hour_ns, 0)
    return DailyHistory(first_day, table, valid, mcc)


def _per_device(
    reader: InfluxQLReader, select: str, start_ns: int, end_ns: int, where: str = ""
) -> dict[str, list[Any]]:
    extra = f" AND {where}" if where else ""
    series: list[Series] = reader.query(
        f"{select} WHERE time >= {start_ns} AND time < {end_ns}{extra} GROUP BY device"
    )
    return {s.tags["device"]: s.values[0][1:] for s in series if s.values}


def _terminal_baselines(
    hourly: dict[str, _Hourly],
    volume: dict[str, VolumeFit],
    amounts: dict[str, list[Any]],
    temperatures: dict[str, list[Any]],
    end_ns: int,
) -> dict[str, TerminalBaseline]:
    out: dict[str, TerminalBaseline] = {}
    for device, h in hourly.items():
        # a terminal's history starts when it does: one new this week has no other weeks
        history_hours = (end_ns - h.first_ns) / NS_PER_HOUR
        p25, median, p75 = (float(v) if v is not None else 1.0 for v in amounts.get(device, []))
        t50, t99 = temperatures.get(device, DEFAULT_TEMPERATURE)
        alpha, beta = DECLINE_PRIOR
        out[device] = TerminalBaseline(
            rate_per_hour=volume[device].rate_per_hour,
            rate_weight=volume[device].rate_weight,
            dispersion=volume[device].dispersion,
            hours_changed_ns=volume[device].hours_changed_ns,
            hours_changed=volume[device].hours_changed,
            decline_rate=(h.declined + alpha) / (h.payments + alpha + beta),
            amount_log_median=math.log(max(1.0, median)),
            amount_log_sigma=max(0.1, math.log(max(1.0, p75) / max(1.0, p25)) / IQR_TO_SIGMA),
            temperature_p50=float(t50 if t50 is not None else DEFAULT_TEMPERATURE[0]),
            temperature_p99=float(t99 if t99 is not None else DEFAULT_TEMPERATURE[1]),
            site=h.site,
            acquirer=h.acquirer,
            mcc=h.mcc,
            profile=-1,
            history_hours=history_hours,
        )
    return out


def _add_latencies(terminals: dict[str, TerminalBaseline], latencies: dict[str, list[Any]]) -> None:
    """Each terminal's usual online authorisation latency: ln-median and robust spread."""
    for device, (p25, median, p75) in latencies.items():
        baseline = terminals.get(device)
        if baseline is None or not (p25 and median and p75):
            continue
        baseline.latency_log_median = math.log(float(median))
        baseline.latency_log_sigma = max(0.05, math.log(float(p75) / float(p25)) / IQR_TO_SIGMA)


def _add_decline_codes(
    terminals: dict[str, TerminalBaseline], reader: InfluxQLReader, start_ns: int, end_ns: int
) -> None:
    """Each terminal's mix of decline codes: its own declines, shrunk towards its
    merchant category's (a terminal sees a few dozen declines a week)."""
    declines = reader.select(
        "payment", ("device", "response_code"), start_ns, end_ns, "approved = 0 AND offline = 0"
    )
    own: dict[str, Counter[str]] = defaultdict(Counter)
    by_mcc: dict[str, Counter[str]] = defaultdict(Counter)
    for device, code in zip(declines["device"], declines["response_code"], strict=True):
        own[device][code] += 1
        baseline = terminals.get(device)
        if baseline is not None:
            by_mcc[baseline.mcc][code] += 1
    for device, baseline in terminals.items():
        pooled = by_mcc.get(baseline.mcc)
        if not pooled:
            continue
        pooled_total = sum(pooled.values())
        counts = own.get(device, Counter())
        total = sum(counts.values()) + DECLINE_CODE_PRIOR
        baseline.decline_codes = {
            code: (counts[code] + DECLINE_CODE_PRIOR * n / pooled_total) / total
            for code, n in sorted(pooled.items())
        }


def _profile_features(baseline: Baseline) -> list[float]:
    """Hour-of-day traffic shape (shares), log volume and log typical amount."""
    by_hod = [sum(baseline.rate_per_hour[d * 24 + h] for d in range(7)) for h in range(24)]
    total = sum(by_hod)
    shape = [x / total for x in by_hod] if total else [0.0] * 24
    return [*shape, math.log1p(total / 7), baseline.amount_log_median / 10]


def _fit_profiles(
    terminals: dict[str, TerminalBaseline], seed: int
) -> tuple[KMeans | None, dict[str, int]]:
    if len(terminals) < 2:  # a profile of one terminal says nothing
        return None, {d: 0 for d in terminals}
    devices = sorted(terminals)
    x = np.array([_profile_features(terminals[d]) for d in devices])
    k = max(1, min(MAX_PROFILES, len(devices) // 5))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    return model, {d: int(label) for d, label in zip(devices, model.labels_, strict=True)}


def _median_baseline(members: list[TerminalBaseline]) -> Baseline:
    if not members:
        return _empty_baseline()

    def median(values: list[float]) -> float:
        return float(np.median(values))

    return Baseline(
        rate_per_hour=[
            median([m.rate_per_hour[h] for m in members]) for h in range(HOURS_PER_WEEK)
        ],
        decline_rate=median([m.decline_rate for m in members]),
        amount_log_median=median([m.amount_log_median for m in members]),
        amount_log_sigma=median([m.amount_log_sigma for m in members]),
        temperature_p50=median([m.temperature_p50 for m in members]),
        temperature_p99=median([m.temperature_p99 for m in members]),
        decline_codes=_pooled_codes([m.decline_codes for m in members]),
    )


def _pooled_codes(mixes: list[dict[str, float]]) -> dict[str, float]:
    """The average decline-code mix of several terminals."""
    total: Counter[str] = Counter()
    for mix in mixes:
        total.update(mix)
    weight = sum(total.values())
    return {code: share / weight for code, share in sorted(total.items())} if weight else {}


def _empty_baseline() -> Baseline:
    alpha, beta = DECLINE_PRIOR
    return Baseline(
        rate_per_hour=[0.0] * HOURS_PER_WEEK,
        decline_rate=alpha / (alpha + beta),
        amount_log_median=math.log(2000),
        amount_log_sigma=1.0,
        temperature_p50=DEFAULT_TEMPERATURE[0],
        temperature_p99=DEFAULT_TEMPERATURE[1],
    )


def _acquirer_baselines(
    reader: InfluxQLReader, start_ns: int, end_ns: int
) -> dict[str, AcquirerBaseline]:
    series = reader.query(
        "SELECT count(approved), sum(approved), median(auth_latency_ms), "
        'percentile(auth_latency_ms, 95) FROM "payment" '
        f"WHERE time >= {start_ns} AND time < {end_ns} AND offline = 0 GROUP BY acquirer"
    )
    system_declines = system_declines_by_acquirer(reader, start_ns, end_ns)
    out: dict[str, AcquirerBaseline] = {}
    alpha, beta = DECLINE_PRIOR
    for s in series:
        _, count, approved, p50, p95 = s.values[0]
        count, approved = int(count or 0), int(approved or 0)
        out[s.tags["acquirer"]] = AcquirerBaseline(
            decline_rate=(count - approved + alpha) / (count + alpha + beta),
            system_decline_rate=(system_declines.get(s.tags["acquirer"], 0) + alpha)
            / (count + alpha + beta),
            latency_median_ms=float(p50 or 0.0),
            latency_p95_ms=float(p95 or 0.0),
        )
    return out


def _fit_fraud(
    reader: InfluxQLReader,
    start_ns: int,
    end_ns: int,
    window_s: int,
    seed: int,
    *,
    progress: Progress,
) -> tuple[IsolationForest | None, list[str], int]:
    """The fraud model over per-terminal windows (None: fewer than `MIN_FRAUD_WINDOWS`),
    the cards normally used at many sites, and how many terminal-windows it saw."""
    window_ns = window_s * NS_PER_S
    rows: list[np.ndarray[Any, Any]] = []
    sites_by_card_hour: dict[tuple[str, int], set[str]] = defaultdict(set)
    starts = range(start_ns - start_ns % window_ns, end_ns, window_ns)
    for lo in progress.track(starts, "train: fraud windows"):
        payments = reader.select("payment", PAYMENT_COLUMNS, lo, min(lo + window_ns, end_ns))
        for ts, card, site in zip(
            payments.time, payments["card_token"], payments["site"], strict=True
        ):
            sites_by_card_hour[(card, ts // NS_PER_HOUR)].add(site)
        windows = group_by_terminal(payments)
        if windows:
            rows.append(feature_matrix(windows))
    multi_site = sorted({card for (card, _), sites in sites_by_card_hour.items() if len(sites) > 1})
    seen = sum(len(r) for r in rows)
    if seen < MIN_FRAUD_WINDOWS:
        return None, multi_site, seen
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(np.vstack(rows))
    return forest, multi_site, seen

"""`tillpulse cloud train`: learn baselines, profiles and the fraud model from history.

Seasonal volume, amounts, temperatures and each acquirer's figures are
aggregated by InfluxDB (one row per terminal and hour, or per terminal), so
training on weeks of a large fleet moves little data. The fraud model needs
raw payments: it reads the last ``fraud_hours`` of the history in windows.
History is assumed mostly normal; the robust statistics (medians,
quantiles) and the IsolationForest tolerate a few anomalies in it.
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
    hour_of_week,
    hours_of_week_seen,
    majority_profile,
    metadata,
)
from cloud.reading.influxql_reader import InfluxQLReader, Series
from cloud.reading.window import PAYMENT_COLUMNS, system_declines_by_acquirer
from runtime.logs import kv
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S

log = logging.getLogger(__name__)

MAX_PROFILES: Final = 8
IQR_TO_SIGMA: Final = 1.349  # a normal distribution's interquartile range in sigmas
DEFAULT_TEMPERATURE: Final = (30.0, 40.0)
MIN_FRAUD_WINDOWS: Final = 50  # fewer: too few to say what is unusual
DECLINE_PRIOR: Final = (1.0, 20.0)  # Beta prior: a few declines in twenty, before data
DECLINE_CODE_PRIOR: Final = 20.0  # a terminal's decline-code mix: its merchant category's, worth 20
# volume dispersion (variance of an hour's gamma factor; cloud.detectors.kpis): prior weights
# in degrees of freedom (one per hour of the week seen n times: n - 1)
DISPERSION_TERMINAL_PRIOR: Final = 20.0  # a terminal's, all hours: its merchant category's
DISPERSION_HOUR_PRIOR: Final = 8.0  # a terminal's hour of the week: the terminal's, all hours
DISPERSION_MIN_MEAN: Final = 1.0  # hours of the week averaging fewer payments say too little
MAX_DISPERSION: Final = 4.0


def train(
    reader: InfluxQLReader,
    start_ns: int,
    end_ns: int,
    *,
    window_s: int,
    fraud_hours: float = 48.0,
    seed: int = 0,
) -> TrainedModel:
    if end_ns - start_ns < NS_PER_HOUR:
        raise ValueError("train needs at least an hour of history")
    hourly = _hourly_volume(reader, start_ns, end_ns)
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
    terminals = _terminal_baselines(hourly, amounts, temperatures, end_ns)
    dispersions = volume_dispersion(
        {d: _padded(h.counts, hours_of_week_seen(h.first_ns, end_ns)) for d, h in hourly.items()},
        {d: t.mcc for d, t in terminals.items()},
        {d: t.rate_per_hour for d, t in terminals.items()},
    )
    for device, dispersion in dispersions.items():
        terminals[device].dispersion = dispersion
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
    fraud, multi_site_cards = _fit_fraud(reader, fraud_start, end_ns, window_s, seed)
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
            window_s=window_s,
            fraud_features=list(FEATURES),
        ),
    )


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).isoformat()


class _Hourly:
    def __init__(self) -> None:
        self.site = ""
        self.acquirer = ""
        self.mcc = ""
        self.counts: dict[int, list[int]] = defaultdict(list)  # hour of week -> counts
        self.payments = 0
        self.declined = 0
        self.first_ns = 0  # start of the first day of the history it took payments


def _hourly_volume(reader: InfluxQLReader, start_ns: int, end_ns: int) -> dict[str, _Hourly]:
    """Payments per terminal and hour of the week, a day per query."""
    per_device: dict[str, _Hourly] = defaultdict(_Hourly)
    day_start = start_ns - start_ns % NS_PER_HOUR
    for lo in range(day_start, end_ns, NS_PER_DAY):
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
                hourly.counts[hour_of_week(int(ts))].append(count)
                hourly.payments += count
                hourly.declined += count - int(approved or 0)
                if mcc:
                    hourly.mcc = str(mcc)
    return per_device


def _per_device(
    reader: InfluxQLReader, select: str, start_ns: int, end_ns: int, where: str = ""
) -> dict[str, list[Any]]:
    extra = f" AND {where}" if where else ""
    series: list[Series] = reader.query(
        f"{select} WHERE time >= {start_ns} AND time < {end_ns}{extra} GROUP BY device"
    )
    return {s.tags["device"]: s.values[0][1:] for s in series if s.values}


def seasonal_rates(counts: dict[int, list[int]], seen: list[int]) -> list[float]:
    """Mean payments per hour for each hour of the week, hours with no payment as zeros.

    An hour of the week seen less than twice borrows from the same hour of the
    other days, so one odd day does not make the baseline; one not seen at all
    (less than a week of history) is the mean of the same hour of the days seen.
    """
    totals = [sum(counts.get(h, [])) for h in range(HOURS_PER_WEEK)]
    by_hod = []
    for hod in range(24):
        hours = sum(seen[d * 24 + hod] for d in range(7))
        by_hod.append(sum(totals[d * 24 + hod] for d in range(7)) / max(1, hours))
    rates = []
    for h in range(HOURS_PER_WEEK):
        if seen[h] == 0:
            rates.append(by_hod[h % 24])
        elif seen[h] >= 2:
            rates.append(totals[h] / seen[h])
        else:
            rates.append(0.5 * totals[h] + 0.5 * by_hod[h % 24])
    return rates


def _padded(counts: dict[int, list[int]], seen: list[int]) -> dict[int, list[int]]:
    """Each hour of the week's counts, with a 0 for each hour seen without a row."""
    return {
        h: counts.get(h, []) + [0] * (seen[h] - len(counts.get(h, [])))
        for h in range(HOURS_PER_WEEK)
    }


class _Moments:
    """Sums over hours of the week seen twice or more, weighted by degrees of freedom."""

    def __init__(self) -> None:
        self.df = 0.0  # sum of n - 1
        self.excess = 0.0  # sum of (n - 1)(s^2 - m): estimates dispersion mu^2
        self.square = 0.0  # sum of (n - 1)(m^2 - s^2/n): estimates mu^2
        self.variance = 0.0  # sum of (n - 1) s^2
        self.mean = 0.0  # sum of (n - 1) m

    def add(self, counts: list[int]) -> None:
        n = len(counts)
        m = sum(counts) / max(1, n)
        if n < 2 or m < DISPERSION_MIN_MEAN:
            return
        s2 = sum((c - m) ** 2 for c in counts) / (n - 1)
        self.df += n - 1
        self.excess += (n - 1) * (s2 - m)
        self.square += (n - 1) * (m * m - s2 / n)
        self.variance += (n - 1) * s2
        self.mean += (n - 1) * m

    def dispersion(self) -> float | None:
        """Moment estimate of the negative binomial's dispersion (None: no information)."""
        if self.square <= 0.0:
            return None
        return min(MAX_DISPERSION, max(0.0, self.excess / self.square))

    def ratio(self) -> float | None:
        """Quasi-Poisson: the variance as a multiple of the mean (None: no information)."""
        return max(1.0, self.variance / self.mean) if self.mean > 0.0 else None

    def __iadd__(self, other: _Moments) -> _Moments:
        self.df += other.df
        self.excess += other.excess
        self.square += other.square
        self.variance += other.variance
        self.mean += other.mean
        return self


def _shrunk(own: float | None, df: float, prior: float, weight: float) -> float:
    return prior if own is None else (df * own + weight * prior) / (df + weight)


def volume_dispersion(
    counts: dict[str, dict[int, list[int]]],
    mccs: dict[str, str],
    rates: dict[str, list[float]],
) -> dict[str, list[float]]:
    """Each terminal's dispersion of hourly payment counts, by hour of the week.

    ``counts``: per terminal, the payments of each hour of the week in its history (0s
    included). The counts are taken as negative binomial, variance ``mu + d mu^2``; ``d``
    is estimated by moments, (s^2 - m) / (m^2 - s^2/n), over the hours of the week seen
    twice or more, then shrunk: a terminal's hour of the week towards the terminal's
    figure over all hours (prior weight ``DISPERSION_HOUR_PRIOR`` degrees of freedom), and
    that towards its merchant category's (``DISPERSION_TERMINAL_PRIOR``), the fleet's for
    a category alone. Counts may instead vary in proportion to their mean (quasi-Poisson,
    variance ``phi mu``): the figure of an hour is never below ``(phi - 1) / mu``, phi
    shrunk the same way, so that a quiet hour is not held to the busy hours' dispersion.
    """
    own = {d: {h: _cell(c) for h, c in by_hour.items()} for d, by_hour in counts.items()}
    totals: dict[str, _Moments] = {}
    for device, cells in own.items():
        total = _Moments()
        for cell in cells.values():
            total += cell
        totals[device] = total
    fleet, by_mcc = _Moments(), defaultdict[str, _Moments](_Moments)
    for device, total in totals.items():
        fleet += total
        by_mcc[mccs.get(device, "")] += total
    fleet_d, fleet_phi = fleet.dispersion() or 0.0, fleet.ratio() or 1.0
    out: dict[str, list[float]] = {}
    for device, cells in own.items():
        category = by_mcc[mccs.get(device, "")]
        cat_d = _shrunk(category.dispersion(), category.df, fleet_d, DISPERSION_TERMINAL_PRIOR)
        cat_phi = _shrunk(category.ratio(), category.df, fleet_phi, DISPERSION_TERMINAL_PRIOR)
        total = totals[device]
        term_d = _shrunk(total.dispersion(), total.df, cat_d, DISPERSION_TERMINAL_PRIOR)
        term_phi = _shrunk(total.ratio(), total.df, cat_phi, DISPERSION_TERMINAL_PRIOR)
        rate = rates.get(device, [0.0] * HOURS_PER_WEEK)
        figures = []
        for h in range(HOURS_PER_WEEK):
            cell = cells.get(h, _Moments())
            d = _shrunk(cell.dispersion(), cell.df, term_d, DISPERSION_HOUR_PRIOR)
            if rate[h] > 0.0:
                d = max(d, (term_phi - 1.0) / max(rate[h], DISPERSION_MIN_MEAN))
            figures.append(round(min(MAX_DISPERSION, d), 5))
        out[device] = figures
    return out


def _cell(counts: list[int]) -> _Moments:
    moments = _Moments()
    moments.add(counts)
    return moments


def _terminal_baselines(
    hourly: dict[str, _Hourly],
    amounts: dict[str, list[Any]],
    temperatures: dict[str, list[Any]],
    end_ns: int,
) -> dict[str, TerminalBaseline]:
    out: dict[str, TerminalBaseline] = {}
    for device, h in hourly.items():
        # a terminal's history starts when it does: one new this week has no other weeks
        history_hours = (end_ns - h.first_ns) / NS_PER_HOUR
        seen = hours_of_week_seen(h.first_ns, end_ns)
        p25, median, p75 = (float(v) if v is not None else 1.0 for v in amounts.get(device, []))
        t50, t99 = temperatures.get(device, DEFAULT_TEMPERATURE)
        alpha, beta = DECLINE_PRIOR
        out[device] = TerminalBaseline(
            rate_per_hour=seasonal_rates(h.counts, seen),
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
    reader: InfluxQLReader, start_ns: int, end_ns: int, window_s: int, seed: int
) -> tuple[IsolationForest | None, list[str]]:
    """The fraud model over per-terminal windows, and the cards normally used at many sites."""
    window_ns = window_s * NS_PER_S
    rows: list[np.ndarray[Any, Any]] = []
    sites_by_card_hour: dict[tuple[str, int], set[str]] = defaultdict(set)
    for lo in range(start_ns - start_ns % window_ns, end_ns, window_ns):
        payments = reader.select("payment", PAYMENT_COLUMNS, lo, min(lo + window_ns, end_ns))
        for ts, card, site in zip(
            payments.time, payments["card_token"], payments["site"], strict=True
        ):
            sites_by_card_hour[(card, ts // NS_PER_HOUR)].add(site)
        windows = group_by_terminal(payments)
        if windows:
            rows.append(feature_matrix(windows))
    multi_site = sorted({card for (card, _), sites in sites_by_card_hour.items() if len(sites) > 1})
    if not rows or sum(len(r) for r in rows) < MIN_FRAUD_WINDOWS:
        return None, multi_site
    return IsolationForest(n_estimators=100, random_state=seed).fit(np.vstack(rows)), multi_site

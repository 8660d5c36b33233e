"""A terminal's usual payment volume, learned from its days of history (`tillpulse cloud train`).

Input, per terminal: its payments in each clock hour of each day of its history
(`DailyHistory`), the hours of operator calendar days (`wire.calendar`: sale, holiday,
closed) left out, so an unusual day is not learned as a usual one. Output
(`VolumeFit`): the expected payments of each hour of the week, the sightings behind
each (`rate_weight`: `cloud.detectors.kpis` judges an hour of the week only from
``volume_min_weeks`` of them), the dispersion of its hourly counts, and the day its
opening hours changed, if they did.

- **Day-of-week weighting.** An hour of the week is the weighted mean of its own
  sightings (weight 1 each) and of the same clock hour on the other days of its kind
  (weekdays Mon-Fri, weekend Sat-Sun; ``SAME_KIND_WEIGHT`` each), each scaled by the
  merchant category's ratio of the two days' volumes. That ratio is the **category
  prior**: pooled over the category's terminals, a week of history gives a steady
  ratio where one terminal's week would not. A week of history thus gives a weekday
  hour 1 + 4 x 1/4 = 2 sightings: judged; a weekend hour 1.25: not yet.
- **Closed days.** A day without a payment (and not on the calendar) is the shop's own
  business: a sighting of its own day of the week, lent to no other day; a day of the
  week seen closed every time borrows from no other day either.
- **Changed hours.** For each clock hour, the open days since each candidate day are
  compared with the open days before it (each day scaled by its category day level): a
  negative-binomial likelihood ratio of two means against one, at the hour's dispersion
  learnt as if nothing changed (at least ``CHANGE_MIN_DISPERSION``), counted only where
  one mean is at most ``CHANGE_RATIO`` of the other (the hour opened or closed; drift in
  a busy hour is not a change of hours) and from ``CHANGE_HOUR_NATS``. The candidate with
  the most evidence over those hours, if at least ``CHANGE_NATS`` with ``CHANGE_MIN_DAYS``
  open days or more on each side, is the first day of the new hours; the hours that
  changed take their rates, sightings and dispersion from the days since only. Two days
  of new hours are enough for a busy till; a quiet one, whose mornings say little, may
  need more (`cloud.detectors.kpis` learns them live meanwhile).
- **Dispersion** (variance ``d`` of an hour's gamma factor: variance ``mu + d mu^2``) by
  moments per clock hour and kind of day (each day's count scaled by its category day
  level to the cell's mean: Saturday's extra trade is not dispersion), shrunk towards the
  terminal's, its category's and the fleet's (`volume_dispersion`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from cloud.detectors.trained_model import HOURS_PER_WEEK
from wire.timestamps import NS_PER_DAY

SAME_KIND_WEIGHT: Final = 0.25  # the same clock hour on another day of the same kind
CHANGE_MIN_DAYS: Final = 2  # open days on each side of a change of hours
CHANGE_RATIO: Final = 0.2  # an hour's mean on one side at most this much of the other's
CHANGE_MIN_DISPERSION: Final = 0.05  # of the change test: no hour is taken as near Poisson
CHANGE_HOUR_NATS: Final = 2.0  # evidence that one clock hour changed
CHANGE_NATS: Final = 8.0  # evidence over all the hours that changed
# dispersion: prior weights in degrees of freedom (one per cell seen n times: n - 1)
DISPERSION_TERMINAL_PRIOR: Final = 20.0  # a terminal's, all hours: its merchant category's
DISPERSION_HOUR_PRIOR: Final = 8.0  # a terminal's clock hour and kind of day: the terminal's
DISPERSION_MIN_MEAN: Final = 1.0  # cells averaging fewer payments say too little
MAX_DISPERSION: Final = 4.0

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True, slots=True)
class DailyHistory:
    """One terminal's payments per clock hour, a row per day from ``first_day_ns``."""

    first_day_ns: int  # 00:00 UTC of its first day
    counts: FloatArray  # (days, 24)
    valid: BoolArray  # (days, 24): the hour is in its history and on no calendar day
    mcc: str

    def weekdays(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Day of the week of each row, 0 = Monday (1970-01-01 was a Thursday)."""
        first = self.first_day_ns // NS_PER_DAY
        return np.asarray((first + 3 + np.arange(len(self.counts))) % 7, dtype=np.int64)

    def kinds(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """`kind_of` each row."""
        return np.asarray(self.weekdays() >= 5, dtype=np.int64)

    def open_days(self) -> BoolArray:
        """Rows with a payment in a valid hour (a closed day has none)."""
        return np.asarray((self.counts * self.valid).sum(axis=1) > 0)


@dataclass(frozen=True, slots=True)
class VolumeFit:
    rate_per_hour: list[float]
    rate_weight: list[float]
    dispersion: list[float]
    hours_changed_ns: int  # 00:00 UTC of the first day of new opening hours; 0: none
    hours_changed: list[int]  # the clock hours that changed then


def kind_of(weekday: int) -> int:
    """0: a weekday, 1: the weekend."""
    return int(weekday >= 5)


def learn_volume(histories: dict[str, DailyHistory]) -> dict[str, VolumeFit]:
    """Each terminal's hour-of-week rates, their sightings and dispersion (module docstring)."""
    levels = _category_day_levels(histories)
    uses = {d: h.valid for d, h in histories.items()}
    first = _fit(histories, uses, levels)  # as if no hours changed: the change test's spread
    changes: dict[str, tuple[int, list[int]]] = {}
    for device, history in histories.items():
        level = levels[history.mcc]
        spread = np.max(np.reshape(first[device][2], (7, 24)), axis=0)  # by clock hour
        since, changed = hours_changed(history, level, spread)
        changes[device] = (history.first_day_ns + since * NS_PER_DAY if changed else 0, changed)
        if changed:
            uses[device] = history.valid.copy()
            uses[device][:since, changed] = False
    fits = _fit(histories, uses, levels)
    return {
        device: VolumeFit(rates, weights, dispersion, *changes[device])
        for device, (rates, weights, dispersion) in fits.items()
    }


def _fit(
    histories: dict[str, DailyHistory], uses: dict[str, BoolArray], levels: dict[str, FloatArray]
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Rates, sightings and dispersion of each terminal from the hours of its ``uses``."""
    rated = {d: _rates(h, uses[d], levels[h.mcc]) for d, h in histories.items()}
    dispersions = volume_dispersion(
        {d: _cells(h, uses[d], levels[h.mcc]) for d, h in histories.items()},
        {d: h.mcc for d, h in histories.items()},
        {d: rates for d, (rates, _) in rated.items()},
    )
    return {d: (rates, weights, dispersions[d]) for d, (rates, weights) in rated.items()}


def _category_day_levels(histories: dict[str, DailyHistory]) -> dict[str, FloatArray]:
    """Per merchant category: the mean payments of an open day, by day of the week,
    relative to its mean over the week (1.0 where the category never traded that day)."""
    totals: dict[str, FloatArray] = defaultdict(lambda: np.zeros(7))
    days: dict[str, FloatArray] = defaultdict(lambda: np.zeros(7))
    for history in histories.values():
        full = history.valid.all(axis=1) & history.open_days()
        day_totals = history.counts.sum(axis=1)
        for weekday, total in zip(history.weekdays()[full], day_totals[full], strict=True):
            totals[history.mcc][weekday] += total
            days[history.mcc][weekday] += 1
    levels: dict[str, FloatArray] = defaultdict(lambda: np.ones(7))
    for mcc, total in totals.items():
        seen = days[mcc] > 0
        mean = np.where(seen, total / np.maximum(days[mcc], 1), 0.0)
        overall = mean[seen].mean() if seen.any() else 0.0
        if overall > 0:
            levels[mcc] = np.where(seen & (mean > 0), mean / overall, 1.0)
    return levels


def hours_changed(
    history: DailyHistory, level: FloatArray, spread: FloatArray
) -> tuple[int, list[int]]:
    """The first day (row) of new opening hours and the clock hours that changed,
    ``(0, [])`` if they did not (module docstring); ``spread``: the dispersion of each
    clock hour's counts."""
    rows = np.flatnonzero(history.open_days())
    if len(rows) < 2 * CHANGE_MIN_DAYS:
        return 0, []
    scale = level[history.weekdays()[rows]]
    # candidate c: the first CHANGE_MIN_DAYS.. open days before it, as many after it
    cuts = np.arange(CHANGE_MIN_DAYS, len(rows) - CHANGE_MIN_DAYS + 1)
    before = np.arange(len(rows))[None, :] < cuts[:, None]  # (candidates, open days)
    evidence = np.zeros((len(cuts), 24))
    for hour in range(24):
        valid = history.valid[rows, hour]
        dispersion = max(CHANGE_MIN_DISPERSION, float(spread[hour]))
        evidence[:, hour] = _change_llr(
            history.counts[rows, hour], scale, before & valid, valid, dispersion
        )
    qualified = np.where(evidence >= CHANGE_HOUR_NATS, evidence, 0.0)
    best = int(np.argmax(qualified.sum(axis=1)))
    if qualified[best].sum() < CHANGE_NATS:
        return 0, []
    return int(rows[cuts[best]]), [int(h) for h in np.flatnonzero(qualified[best])]


def _change_llr(
    x: FloatArray, scale: FloatArray, before: BoolArray, valid: BoolArray, dispersion: float
) -> FloatArray:
    """Per candidate: the log-likelihood ratio of a mean before and one after it against
    one mean throughout, 0 where neither mean is at most CHANGE_RATIO of the other."""
    after = valid[None, :] & ~before

    def mean(mask: BoolArray) -> FloatArray:
        return np.asarray((mask * x).sum(axis=1) / np.maximum((mask * scale).sum(axis=1), 1e-9))

    both = before | after
    m_before, m_after = mean(before), mean(after)
    llr = (
        _nb_loglik(x, scale, m_before, before, dispersion)
        + _nb_loglik(x, scale, m_after, after, dispersion)
        - _nb_loglik(x, scale, mean(both), both, dispersion)
    )
    extreme = np.minimum(m_before, m_after) <= CHANGE_RATIO * np.maximum(m_before, m_after)
    enough = (before.sum(axis=1) >= CHANGE_MIN_DAYS) & (after.sum(axis=1) >= CHANGE_MIN_DAYS)
    return np.where(extreme & enough, llr, 0.0)


def _nb_loglik(
    x: FloatArray, scale: FloatArray, mean: FloatArray, mask: BoolArray, dispersion: float
) -> FloatArray:
    """Negative-binomial log-likelihood of the masked counts at ``mean x scale`` each, up to
    the terms that do not depend on the mean."""
    k = 1.0 / dispersion
    mu = np.maximum(mean[:, None] * scale[None, :], 1e-9)
    terms = x[None, :] * np.log(mu / (mu + k)) + k * np.log(k / (k + mu))
    return np.asarray((terms * mask).sum(axis=1))


def _rates(
    history: DailyHistory, use: BoolArray, level: FloatArray
) -> tuple[list[float], list[float]]:
    """Each hour of the week's rate and sightings: its own days and, weighted, the same
    hour of the open days of its kind (module docstring). Arrays are (weekday, day, hour)."""
    weekdays, counts = history.weekdays(), history.counts
    open_days = history.open_days()
    days_of = weekdays[None, :] == np.arange(7)[:, None]  # (weekday, day): the day is one
    same_kind = (history.kinds()[None, :] == np.arange(7)[:, None] // 5) & ~days_of
    own = days_of[:, :, None] & use[None, :, :]
    lend = (same_kind & open_days[None, :])[:, :, None] & use[None, :, :]
    closed_every_time = own.any(axis=1) & ~(own & open_days[None, :, None]).any(axis=1)
    lend &= ~closed_every_time[:, None, :]  # seen closed every time: that is its day
    scaled = counts[None, :, :] * (level[:, None] / level[weekdays][None, :])[:, :, None]
    total = (own * counts[None]).sum(axis=1) + SAME_KIND_WEIGHT * (lend * scaled).sum(axis=1)
    weight = own.sum(axis=1) + SAME_KIND_WEIGHT * lend.sum(axis=1)
    # no day of its kind in the history: the mean of that hour over the open days, unjudged
    every = (use & open_days[:, None])[None, :, :]
    fallback = (every * scaled).sum(axis=1) / np.maximum(1, every.sum(axis=1))
    rates = np.where(weight > 0, total / np.maximum(weight, 1e-12), fallback)
    return [float(r) for r in rates.ravel()], [float(w) for w in weight.ravel()]


def _cells(history: DailyHistory, use: BoolArray, level: FloatArray) -> dict[int, list[float]]:
    """Counts per clock hour and kind of day (cell ``kind x 24 + hour``), for the dispersion;
    each scaled by its category's day level to the mean of the cell's (Saturday is not
    Sunday: their difference is not dispersion)."""
    weekdays, kinds = history.weekdays(), history.kinds()
    cells = {}
    for kind in (0, 1):
        for hour in range(24):
            rows = use[:, hour] & (kinds == kind)
            scale = level[weekdays[rows]]
            counts = history.counts[rows, hour] * (scale.mean() / scale if rows.any() else 1.0)
            cells[kind * 24 + hour] = [float(c) for c in counts]
    return cells


def cell_of(how: int) -> int:
    """The dispersion cell of an hour of the week: its kind of day and clock hour."""
    weekday, hour = divmod(how, 24)
    return kind_of(weekday) * 24 + hour


class _Moments:
    """Sums over cells seen twice or more, weighted by degrees of freedom."""

    def __init__(self) -> None:
        self.df = 0.0  # sum of n - 1
        self.excess = 0.0  # sum of (n - 1)(s^2 - m): estimates dispersion mu^2
        self.square = 0.0  # sum of (n - 1)(m^2 - s^2/n): estimates mu^2
        self.variance = 0.0  # sum of (n - 1) s^2
        self.mean = 0.0  # sum of (n - 1) m

    def add(self, counts: list[float]) -> None:
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
    counts: dict[str, dict[int, list[float]]],
    mccs: dict[str, str],
    rates: dict[str, list[float]],
) -> dict[str, list[float]]:
    """Each terminal's dispersion of hourly payment counts, by hour of the week.

    ``counts``: per terminal, the payments of each cell (`cell_of`: clock hour and kind of
    day) in its history (0s included). The counts are taken as negative binomial, variance
    ``mu + d mu^2``; ``d`` is estimated by moments, (s^2 - m) / (m^2 - s^2/n), over the
    cells seen twice or more, then shrunk: a terminal's cell towards the terminal's figure
    over all cells (prior weight ``DISPERSION_HOUR_PRIOR`` degrees of freedom), and that
    towards its merchant category's (``DISPERSION_TERMINAL_PRIOR``), the fleet's for a
    category alone. The days of a kind differ a little in level, which only adds to
    ``d``: the cautious side. Counts may instead vary in proportion to their mean
    (quasi-Poisson, variance ``phi mu``): the figure of an hour is never below
    ``(phi - 1) / mu``, phi shrunk the same way, so that a quiet hour is not held to the
    busy hours' dispersion.
    """
    own = {d: {c: _cell(n) for c, n in by_cell.items()} for d, by_cell in counts.items()}
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
        for how in range(HOURS_PER_WEEK):
            cell = cells.get(cell_of(how), _Moments())
            d = _shrunk(cell.dispersion(), cell.df, term_d, DISPERSION_HOUR_PRIOR)
            if rate[how] > 0.0:
                d = max(d, (term_phi - 1.0) / max(rate[how], DISPERSION_MIN_MEAN))
            figures.append(round(min(MAX_DISPERSION, d), 5))
        out[device] = figures
    return out


def _cell(counts: list[float]) -> _Moments:
    moments = _Moments()
    moments.add(counts)
    return moments

"""Streaming univariate anomaly detector: one instance per series, a score in [0, 1) per point.

Feed ``update(timestamp, value)`` in time order; each call returns the anomaly score of that
point computed from it and the past only (no look-ahead). A point that steps back in time is
counted and skipped, never raised. The detector needs no knowledge of the series up front: it
learns during a probation period, then scores. See docs/detectors.md ("Streaming univariate
detector") for the algorithm and its figures on synthetic series and on NAB.

Two stages, both robust and with bounded memory:

1. Surprise. The value (log-transformed if non-negative and skewed, square-rooted if counts,
   minus learned time-of-day and time-of-week profiles when samples are dense enough) is
   compared with cheap predictors: the median of the last ``short_window`` values (spikes,
   dips, the start of a level shift), that median against the median of the ``long_window``
   values before (level shifts, drifts, trend breaks), the recent average surprise of both
   (variance changes, slow drifts), the median of the last ``history`` values (a level the
   series has not been at for long) and the run of unchanged values (a stuck sensor).
2. Calibration. Each statistic gets a tail log-probability against its own recent history
   (``history`` values): empirical where there is data, a generalised Pareto tail fitted to
   the top 5% beyond it (peaks over threshold). The smallest, Bonferroni-corrected and
   checked against the history of such combined surprises (real series are heavier-tailed
   than any one fit assumes), becomes the score ``-log10(p) / score_decades``, compressed
   above 0.9 so that it stays below 1: a given threshold means the same tail probability on
   every series, and a rarer point always scores higher (no ties at a saturated 1.0).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import pairwise
from numbers import Real
from typing import Literal

Transform = Literal["auto", "log", "sqrt", "none"]
"""How values are transformed before scoring (``"auto"``: decided at the end of probation)."""

Timestamp = datetime | float | int
"""A ``datetime`` (naive means UTC) or a number of seconds since the Unix epoch."""

_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
_TAIL_FRACTION = 0.05  # the top share of a history fitted with a generalised Pareto tail
_XI_SHRINK = 1.0  # standard errors (about 1/sqrt(k)) taken off the fitted shape of a point...
_XI_SHRINK_SMOOTH = 0.0  # ...but not for smoothed or combined statistics: the least known tails
_XI_MAX = 0.5  # the heaviest tail shape fitted (infinite variance beyond it)
_MIN_HISTORY = 100  # below this many past values a statistic says nothing (p = 1)
_CAP_P = 1e-4  # values beyond this tail probability enter the history capped there
_SURPRISE_CAP = math.log(1000.0)  # one point's share of the averaged surprise is capped
_FLAT_RELATIVE = 1e-3  # "unchanged": a step under this share of the typical error
_RUN_TAIL = 2.0  # P(run >= L) falls as L**-2 beyond the longest run seen
_KNEE = 0.9  # scores above this are compressed so that 1.0 is never reached (no ties)
_BELOW_ONE = math.nextafter(1.0, 0.0)  # what the compression rounds to for absurd values
_SEASON_BINS_MAX = 288  # time-of-day bins: 5 minutes at most
_SEASON_MIN_PER_DAY = 12  # fewer samples a day than this: no time-of-day profile
_WEEK_BINS_MAX = 168  # time-of-week bins: an hour at most
_WEEK_MIN_PER_WEEK = 7  # fewer samples a week than this: no time-of-week profile
_SEASON_RATE = 0.1  # share of a new period's value in each profile bin
_SEASON_CLIP = 4.0  # bin updates are clipped at this many typical deviations
_SKEW_MIN = 0.2  # Bowley skewness above which a non-negative series is log-transformed
_SHIFT_SMOOTHING = 32  # points averaged for the sustained-shift statistic (drifts)
_LOG_TESTS = math.log(6)  # statistics combined (Bonferroni)
_COMBINED_HISTORY = 4  # the combined surprise is judged against 4x ``history`` points...
_COMBINED_MARGIN = math.log(2.0)  # ...and half its tail p overrides a smaller Bonferroni p


def _seconds(timestamp: Timestamp) -> float:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        return timestamp.timestamp()
    if isinstance(timestamp, bool) or not isinstance(timestamp, Real):
        raise TypeError(
            f"timestamp must be a datetime or seconds (int/float), not {type(timestamp).__name__}"
        )
    seconds = float(timestamp)
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be finite, got {timestamp!r}")
    return seconds


class _Window:
    """The last ``size`` values, in arrival order and sorted (for medians and ranks)."""

    __slots__ = ("_ring", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring: deque[float] = deque()
        self.sorted: list[float] = []

    def push(self, value: float) -> float | None:
        """Add ``value``; return the value that fell out, if the window was full."""
        self._ring.append(value)
        insort(self.sorted, value)
        if len(self._ring) > self.size:
            old = self._ring.popleft()
            del self.sorted[bisect_left(self.sorted, old)]
            return old
        return None

    def median(self) -> float:
        s = self.sorted
        half = len(s) >> 1
        return s[half] if len(s) & 1 else 0.5 * (s[half - 1] + s[half])

    def __len__(self) -> int:
        return len(self._ring)


class _Tail:
    """Upper-tail log-probability of a statistic against its own last ``size`` values.

    Empirical rank in the bulk; beyond the top 5% a generalised Pareto distribution fitted to
    those 5% by moments (peaks over threshold), so rare values get graded probabilities rather
    than all "above the maximum", and heavy-tailed real data are not judged as if exponential.
    Probabilities are kept as logarithms, so they never underflow and never tie at a floor.
    Values are judged before they join the history, and join it capped at the 1e-4 quantile so
    one huge anomaly does not blunt the detector for the next ``size`` points.
    """

    __slots__ = ("_shrink", "_window")

    def __init__(self, size: int, shrink: float) -> None:
        self._window = _Window(size)
        self._shrink = shrink

    def observe(self, value: float, eps: float) -> float | None:
        """ln of the tail probability of ``value`` (None while the history is too short)."""
        s = self._window.sorted
        n = len(s)
        log_p: float | None = None
        kept = value
        if n >= _MIN_HISTORY:
            k = max(5, int(n * _TAIL_FRACTION))
            start = n - k
            threshold = s[start]
            if value <= threshold:
                log_p = math.log((n - bisect_left(s, value) + 1) / (n + 1))
            else:
                base = k / (n + 1)
                excess = [x - threshold for x in s[start:]]
                mean = math.fsum(excess) / k
                var = math.fsum((x - mean) ** 2 for x in excess) / k
                # The shape, by moments; only what is clearly heavier than an exponential
                # counts (about one standard error off), so light tails keep their power.
                xi = 0.0
                if var > 0.0:
                    xi = 0.5 * (1.0 - mean * mean / var) - self._shrink / math.sqrt(k)
                    xi = min(_XI_MAX, max(0.0, xi))
                # A tail no lighter than the bulk implies: a history that is still ramping up
                # (top values bunched together) must not look light-tailed.
                bulk = (threshold - s[n >> 1]) / math.log(0.5 / base)
                scale = max(mean * (1.0 - xi), 0.5 * bulk, eps)
                z = (value - threshold) / scale
                cap = math.log(base / _CAP_P)
                if xi > 1e-6:
                    log_p = math.log(base) - math.log1p(xi * z) / xi
                    cap = math.expm1(xi * cap) / xi
                else:
                    log_p = math.log(base) - z
                kept = min(value, threshold + scale * cap)
        self._window.push(kept)
        return log_p

    def median(self) -> float:
        return self._window.median() if len(self._window) else 0.0


class _Sustained:
    """Tail log-probability of the mean surprise ``-ln p`` of a statistic over its last points.

    Moderate surprises that persist (a variance change, a drift) add up here although no
    single point stands out; each point's share is capped so one spike does not count as
    persistence.
    """

    __slots__ = ("_recent", "_sum", "_tail")

    def __init__(self, points: int, history: int, shrink: float) -> None:
        self._recent: deque[float] = deque(maxlen=points)
        self._sum = 0.0
        self._tail = _Tail(history, shrink)

    def observe(self, log_p: float) -> float | None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._sum -= recent[0]
        surprise = min(-log_p, _SURPRISE_CAP)
        recent.append(surprise)
        self._sum += surprise
        if len(recent) < (recent.maxlen or 0):
            return None
        return self._tail.observe(self._sum / len(recent), 1e-12)


class _Profile:
    """A periodic profile (time of day, time of week) subtracted from the values it learns from.

    Each bin holds an EWMA of the value minus a one-period EWMA base level; each period's data
    counts for a tenth of a bin, and updates are clipped at 4 typical deviations so a spike
    does not carry over into the next period. The profile is shrunk towards zero by how much
    of its spread is noise (James-Stein style): a series without this cycle gets (almost)
    nothing subtracted, so the profile cannot add noise. It fades in over the second period,
    once a whole period has been seen.
    """

    __slots__ = (
        "_base",
        "_bins",
        "_first_t",
        "_innovation_sq",
        "_per_period",
        "_period",
        "_rate",
        "_sq",
        "_sum",
        "_visits",
        "_visits_of",
    )

    def __init__(self, period: float, per_period: float, bins_max: int, t: float, y: float) -> None:
        bins = min(bins_max, round(per_period))
        self._period = period
        self._per_period = per_period
        self._bins = [0.0] * bins
        self._visits_of = [0] * bins
        self._rate = min(1.0, _SEASON_RATE * bins / per_period)
        self._first_t = t
        self._base = y
        self._innovation_sq = 0.0
        self._visits = 0
        self._sum = 0.0
        self._sq = 0.0

    def residual(self, t: float, y: float) -> float:
        """``y`` minus the (shrunk) profile at ``t``; the profile then learns from ``y``."""
        bins = self._bins
        nbins = len(bins)
        b = int((t % self._period) * nbins / self._period)
        old = bins[b]
        mean = self._sum / nbins
        spread = self._sq / nbins - mean * mean
        weight = 0.0
        if spread > 0.0 and self._visits > 0:
            rate = self._rate
            noise = self._innovation_sq * max(rate / (2.0 - rate), nbins / self._visits)
            ramp = min(1.0, max(0.0, (t - self._first_t) / self._period - 1.0))
            weight = ramp * max(0.0, 1.0 - noise / spread)
        residual = y - weight * old
        step = y - self._base - old
        self._base += (y - self._base) / self._per_period
        if self._innovation_sq > 0.0:
            limit = _SEASON_CLIP * math.sqrt(self._innovation_sq)
            step = max(-limit, min(limit, step))
        self._innovation_sq += (step * step - self._innovation_sq) / self._per_period
        self._visits_of[b] += 1
        self._visits += 1
        new = old + step * max(self._rate, 1.0 / self._visits_of[b])
        bins[b] = new
        self._sum += new - old
        self._sq += new * new - old * old
        return residual


class StreamingDetector:
    """Anomaly scores in [0, 1) for one series fed point by point in time order.

    Construct one per series; call `update` for each point. 0 is normal; with ``p`` the tail
    probability of the most surprising statistic (see the module docstring) and
    ``d = -log10(p) / score_decades``, the score is ``d`` up to 0.9 and ``0.9 + 0.1 * u / (1 + u)``
    with ``u = (d - 0.9) / 0.1`` beyond, so it never reaches 1 and rarer is always higher.
    With the defaults 0.9 means p = 10**-3.6 and 0.95 means p = 1e-4.

    Tunables (keyword-only; the defaults need no knowledge of the series):

    * ``probation``: finite values learned before scoring starts (scores 0 meanwhile).
    * ``history``: values each statistic is calibrated against (memory and adaptation span).
    * ``short_window``: values in the local median that predicts the next value; a level
      shift stops being anomalous after about half of it.
    * ``long_window``: values in the older median the local one is compared with (drifts).
    * ``smoothing``: points averaged for the sustained-surprise statistic (variance changes).
    * ``seasonal``: learn a time-of-day profile when there are at least 12 samples a day, and
      a time-of-week profile when there are at least 7 a week.
    * ``transform``: ``"auto"`` decides at the end of probation: ``"log"`` for a non-negative
      skewed series (latencies, bursty counts), else ``"sqrt"`` for non-negative integer counts
      (stabilises Poisson noise), else ``"none"``; or force one of the three.
    * ``flat_memory``: effective number of points behind the odds of an unchanged value.
    * ``score_decades``: decades of tail probability mapped onto [0, 1].

    Attributes:
        out_of_order: points skipped because their timestamp was not after the previous
            point's (a step back in time or a repeated timestamp).
    """

    def __init__(
        self,
        *,
        probation: int = 200,
        history: int = 1000,
        short_window: int = 16,
        long_window: int = 128,
        smoothing: int = 8,
        seasonal: bool = True,
        transform: Transform = "auto",
        flat_memory: int = 2000,
        score_decades: float = 4.0,
    ) -> None:
        if transform not in ("auto", "log", "sqrt", "none"):
            raise ValueError(f"transform must be auto, log, sqrt or none, not {transform!r}")
        if probation < 1 or history < _MIN_HISTORY or short_window < 2 or long_window < 2:
            raise ValueError(
                "need probation >= 1, history >= 100, short_window >= 2 and long_window >= 2"
            )
        if smoothing < 1 or flat_memory < 1 or not score_decades > 0:
            raise ValueError("need smoothing >= 1, flat_memory >= 1 and score_decades > 0")
        self.out_of_order = 0
        self._probation = probation
        self._seasonal = seasonal
        self._transform_choice = transform
        self._decades = score_decades * math.log(10.0)  # in units of ln p
        self._last_t: float | None = None
        self._warm: list[tuple[float, float]] | None = []
        # value transform y = log(x + offset), sqrt(x) or x, fixed at the end of probation
        self._kind: Transform = "none"
        self._offset = 0.0
        # time-of-day, then time-of-week profiles (none: too few samples per period)
        self._profiles: list[_Profile] = []
        # predictors
        self._recent = _Window(short_window)
        self._older = _Window(long_window)
        self._point = _Tail(history, _XI_SHRINK)
        self._shift = _Tail(history, _XI_SHRINK_SMOOTH)
        self._sustained_point = _Sustained(smoothing, history, _XI_SHRINK)
        self._sustained_shift = _Sustained(_SHIFT_SMOOTHING, history, _XI_SHRINK_SMOOTH)
        self._values = _Window(history)
        self._level = _Tail(history, _XI_SHRINK_SMOOTH)
        self._combined = _Tail(_COMBINED_HISTORY * history, _XI_SHRINK_SMOOTH)
        # flat line: decayed counts of unchanged steps, and of unchanged after unchanged, and
        # the position within its run of unchanged values of each step before the current run
        self._keep = 1.0 - 1.0 / flat_memory
        self._prev_y: float | None = None
        self._prev_flat = False
        self._steps = 0.0
        self._flats = 0.0
        self._after_flat = 0.0
        self._flat_again = 0.0
        self._run = 0
        self._log_first = 0.0
        self._log_again = 0.0
        self._positions = _Window(history)

    def update(self, timestamp: Timestamp, value: float | None) -> float:
        """Score one point: 0 normal .. 1 anomalous, from this point and the past only.

        A point whose timestamp is not after the previous point's (a step back in time, or a
        repeat) scores 0.0, is counted in `out_of_order` and leaves the state untouched; so
        does a missing value (``None``, NaN, inf), without being counted.

        Raises:
            ValueError: the timestamp is not finite.
            TypeError: the timestamp is neither a datetime nor a number.
        """
        t = _seconds(timestamp)
        if self._last_t is not None and t <= self._last_t:
            self.out_of_order += 1
            return 0.0
        if value is None:
            return 0.0
        x = float(value)
        if not math.isfinite(x):
            return 0.0
        self._last_t = t
        if self._warm is not None:
            self._warm.append((t, x))
            if len(self._warm) >= self._probation:
                self._end_probation(self._warm)
            return 0.0
        return self._step(t, x)

    def score_series(
        self, timestamps: Iterable[Timestamp], values: Iterable[float | None]
    ) -> list[float]:
        """`update` over a whole series in order (the same scores, still no look-ahead)."""
        return [self.update(t, v) for t, v in zip(timestamps, values, strict=True)]

    def _end_probation(self, warm: list[tuple[float, float]]) -> None:
        """Fix the transform and the seasonal profiles from probation, then learn from it."""
        self._warm = None
        xs = sorted(x for _, x in warm)
        n = len(xs)
        q10, q50, q90 = xs[n // 10], xs[n // 2], xs[(9 * n) // 10]
        kind = self._transform_choice
        if kind == "auto":
            skewed = q90 > q10 and (q90 + q10 - 2.0 * q50) / (q90 - q10) > _SKEW_MIN
            counts = q50 > 0.0 and all(x.is_integer() for x in xs)
            kind = "log" if skewed else "sqrt" if counts else "none"
        if xs[0] < 0.0 or xs[-1] <= 0.0:
            kind = "none"  # neither is defined (or useful) for negative or all-zero values
        self._kind = kind
        if kind == "log":
            # An offset keeps zeros finite and noise near zero from dominating.
            self._offset = 0.1 * q50 if q50 > 0 else min(x for x in xs if x > 0)
        gaps = sorted(b[0] - a[0] for a, b in pairwise(warm))
        if self._seasonal and gaps:
            per_day = _DAY_S / gaps[len(gaps) // 2]
            t0, y0 = warm[0][0], self._transform(warm[0][1])
            if per_day >= _SEASON_MIN_PER_DAY:
                self._profiles.append(_Profile(_DAY_S, per_day, _SEASON_BINS_MAX, t0, y0))
            if 7.0 * per_day >= _WEEK_MIN_PER_WEEK:
                self._profiles.append(_Profile(_WEEK_S, 7.0 * per_day, _WEEK_BINS_MAX, t0, y0))
        for t, x in warm:
            self._step(t, x)

    def _transform(self, x: float) -> float:
        if self._kind == "log":
            return math.log(max(x, 0.0) + self._offset)
        if self._kind == "sqrt":
            return math.sqrt(max(x, 0.0))
        return x

    def _flat_log_p(self, y: float) -> float:
        """ln probability of the current run of unchanged values.

        A two-state Markov chain: P(first unchanged step) * P(unchanged again)^(run - 1).
        Counting "unchanged after unchanged" separately means series whose repeats come in
        runs (quantised, idle) learn that long runs are normal, while a noisy series that
        suddenly repeats itself is flagged within a few points. The run is judged by the
        steps before it, so it cannot make itself normal; but never as more surprising than
        those steps show it to be (real idle runs are longer-tailed than geometric), and not
        at all without ``_MIN_HISTORY`` of them: a series that never moved is not stuck.
        """
        prev = self._prev_y
        self._prev_y = y
        if prev is None:
            return 0.0
        tolerance = _FLAT_RELATIVE * self._point.median() + 1e-12 * abs(y)
        flat = abs(y - prev) <= tolerance
        positions = self._positions
        log_p = 0.0
        if flat:
            if self._run == 0:
                # Judged by the odds before the run: a run must not make itself normal.
                self._log_first = math.log((self._flats + 1.0) / (self._steps + 2.0))
                self._log_again = math.log((self._flat_again + 1.0) / (self._after_flat + 2.0))
            self._run += 1
            n = len(positions)
            if n >= _MIN_HISTORY:
                log_p = self._log_first + self._log_again * (self._run - 1)
                # The share of past steps at least this deep into a run; beyond the longest
                # past run a power law, as idle periods of real series are (not geometric).
                longest = positions.sorted[-1]
                depth = min(self._run, longest)
                if depth >= 1:
                    share = (n - bisect_left(positions.sorted, depth)) / (n + 1)
                    log_seen = math.log(share) - _RUN_TAIL * math.log(self._run / depth)
                    log_p = max(log_p, log_seen)
        else:
            # The run is over: its steps join the history it will judge later runs by.
            for position in range(max(1, self._run - positions.size + 1), self._run + 1):
                positions.push(float(position))
            positions.push(0.0)
            self._run = 0
        keep = self._keep
        if self._prev_flat:
            self._after_flat = self._after_flat * keep + 1.0
            self._flat_again = self._flat_again * keep + flat
        self._prev_flat = flat
        self._steps = self._steps * keep + 1.0
        self._flats = self._flats * keep + flat
        return log_p

    def _step(self, t: float, x: float) -> float:
        y = self._transform(x)
        log_flat = self._flat_log_p(y)
        r = y
        for profile in self._profiles:
            r = profile.residual(t, r)
        eps = 1e-9 * abs(r) + 1e-300
        recent = self._recent
        log_p = 0.0
        if len(recent) >= 2:
            lp_point = self._point.observe(abs(r - recent.median()), eps)
            if lp_point is not None:
                lp_sustained = self._sustained_point.observe(lp_point)
                log_p = min(log_p, lp_point, 0.0 if lp_sustained is None else lp_sustained)
        # How far the value is from the median of the last ``history`` values: what the local
        # predictors have absorbed but the series has not seen for long (a level shift).
        if len(self._values) >= _MIN_HISTORY:
            lp_level = self._level.observe(abs(r - self._values.median()), eps)
            if lp_level is not None:
                log_p = min(log_p, lp_level)
        self._values.push(r)
        fell_out = recent.push(r)
        if fell_out is not None:
            self._older.push(fell_out)
        if len(self._older) * 2 >= self._older.size:
            lp_shift = self._shift.observe(abs(recent.median() - self._older.median()), eps)
            if lp_shift is not None:
                lp_sustained = self._sustained_shift.observe(lp_shift)
                log_p = min(log_p, lp_shift, 0.0 if lp_sustained is None else lp_sustained)
        # Bonferroni over the six statistics; then the combined surprise is judged against its
        # own long history too, and the less surprising of the two is kept (with a margin):
        # on real series the statistics' tails are heavier and more dependent than assumed.
        # The flat statistic is left out: its runs are judged by the runs before them.
        log_p += _LOG_TESTS
        lp_combined = self._combined.observe(-log_p, 1e-12)
        if lp_combined is not None:
            log_p = max(log_p, lp_combined - _COMBINED_MARGIN)
        log_p = min(log_p, log_flat + _LOG_TESTS)
        # Decades of probability, compressed above the knee so that the score stays below 1
        # and keeps ordering the rarest points.
        d = max(0.0, -log_p / self._decades)
        if d <= _KNEE:
            return d
        u = (d - _KNEE) / (1.0 - _KNEE)
        return min(_KNEE + (1.0 - _KNEE) * (1.0 - 1.0 / (1.0 + u)), _BELOW_ONE)

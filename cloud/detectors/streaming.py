"""Streaming univariate anomaly detector: one instance per series, a score in [0, 1] per point.

Feed ``update(timestamp, value)`` in time order; each call returns the anomaly score of that
point computed from it and the past only (no look-ahead). The detector needs no knowledge of
the series up front: it learns during a probation period, then scores. See
docs/detectors.md ("Streaming univariate detector") for the algorithm and its figures.

Two stages, both robust and with bounded memory:

1. Surprise. The value (log-transformed if non-negative and skewed, square-rooted if counts,
   minus a learned time-of-day profile when samples are dense enough) is compared with cheap
   predictors: the median of the last ``short_window`` values (spikes, dips, the start of a
   level shift), that median against the median of the ``long_window`` values before
   (level shifts, drifts, trend breaks), the recent average surprise of both (variance
   changes, slow drifts), and the run of unchanged values (a stuck sensor).
2. Calibration. Each statistic gets a tail probability against its own recent history
   (``history`` values): empirical where there is data, an exponential tail fitted to the top
   5% beyond it (peaks over threshold). The smallest, Bonferroni-corrected, becomes the score
   ``-log10(p) / score_decades`` clipped to [0, 1], so a given threshold means the same
   tail probability on every series.
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
_P_FLOOR = 1e-15  # the smallest tail probability reported: score 1 whatever the decades
_TAIL_FRACTION = 0.05  # the top share of a history fitted with an exponential tail
_MIN_HISTORY = 100  # below this many past values a statistic says nothing (p = 1)
_CAP_P = 1e-4  # values beyond this tail probability enter the history capped there
_SURPRISE_CAP = math.log(1000.0)  # one point's share of the averaged surprise is capped
_FLAT_RELATIVE = 1e-3  # "unchanged": a step under this share of the typical error
_SEASON_BINS_MAX = 288  # time-of-day bins: 5 minutes at most
_SEASON_MIN_PER_DAY = 12  # fewer samples a day than this: no time-of-day profile
_SEASON_RATE = 0.1  # share of a new day's value in each time-of-day bin
_SEASON_CLIP = 4.0  # bin updates are clipped at this many typical deviations
_SKEW_MIN = 0.2  # Bowley skewness above which a non-negative series is log-transformed
_SHIFT_SMOOTHING = 32  # points averaged for the sustained-shift statistic (drifts)
_TESTS = 5  # statistics combined (Bonferroni)


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
    """Upper-tail probability of a statistic against its own last ``size`` values.

    Empirical rank in the bulk; beyond the top 5% an exponential fitted to those 5% (peaks over
    threshold), so rare values get graded probabilities rather than all "above the maximum".
    Values are judged before they join the history, and join it capped at the 1e-4 quantile so
    one huge anomaly does not blunt the detector for the next ``size`` points.
    """

    __slots__ = ("_window",)

    def __init__(self, size: int) -> None:
        self._window = _Window(size)

    def observe(self, value: float, eps: float) -> float | None:
        """Tail probability of ``value`` against the history (None while it is too short)."""
        s = self._window.sorted
        n = len(s)
        p: float | None = None
        kept = value
        if n >= _MIN_HISTORY:
            k = max(5, int(n * _TAIL_FRACTION))
            start = n - k
            threshold = s[start]
            if value <= threshold:
                p = (n - bisect_left(s, value) + 1) / (n + 1)
            else:
                base = k / (n + 1)
                # An exponential tail no lighter than the bulk implies: a history that is
                # still ramping up (top values bunched together) must not look light-tailed.
                bulk = (threshold - s[n >> 1]) / math.log(0.5 / base)
                scale = max(math.fsum(s[start:]) / k - threshold, 0.5 * bulk, eps)
                p = base * math.exp(-(value - threshold) / scale)
                kept = min(value, threshold + scale * math.log(base / _CAP_P))
        self._window.push(kept)
        return p

    def median(self) -> float:
        return self._window.median() if len(self._window) else 0.0


class _Sustained:
    """Tail probability of the mean surprise ``-ln p`` of a statistic over its last points.

    Moderate surprises that persist (a variance change, a drift) add up here although no
    single point stands out; each point's share is capped so one spike does not count as
    persistence.
    """

    __slots__ = ("_recent", "_sum", "_tail")

    def __init__(self, points: int, history: int) -> None:
        self._recent: deque[float] = deque(maxlen=points)
        self._sum = 0.0
        self._tail = _Tail(history)

    def observe(self, p: float) -> float | None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._sum -= recent[0]
        surprise = min(-math.log(max(p, _P_FLOOR)), _SURPRISE_CAP)
        recent.append(surprise)
        self._sum += surprise
        if len(recent) < (recent.maxlen or 0):
            return None
        return self._tail.observe(self._sum / len(recent), 1e-12)


class StreamingDetector:
    """Anomaly scores in [0, 1] for one series fed point by point in time order.

    Construct one per series; call `update` for each point. 0 is normal; the score is
    ``-log10(p) / score_decades`` clipped to [0, 1] where ``p`` is the tail probability of the
    most surprising statistic (see the module docstring), so with the defaults 0.9 means
    p < 10**-3.6 and 1.0 means p <= 1e-4.

    Tunables (keyword-only; the defaults need no knowledge of the series):

    * ``probation``: finite values learned before scoring starts (scores 0 meanwhile).
    * ``history``: values each statistic is calibrated against (memory and adaptation span).
    * ``short_window``: values in the local median that predicts the next value; a level
      shift stops being anomalous after about half of it.
    * ``long_window``: values in the older median the local one is compared with (drifts).
    * ``smoothing``: points averaged for the sustained-surprise statistic (variance changes).
    * ``seasonal``: learn a time-of-day profile when there are at least 12 samples a day.
    * ``transform``: ``"auto"`` decides at the end of probation: ``"log"`` for a non-negative
      skewed series (latencies, bursty counts), else ``"sqrt"`` for non-negative integer counts
      (stabilises Poisson noise), else ``"none"``; or force one of the three.
    * ``flat_memory``: effective number of points behind the odds of an unchanged value.
    * ``score_decades``: decades of tail probability mapped onto [0, 1].
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
        self._probation = probation
        self._seasonal = seasonal
        self._transform_choice = transform
        self._decades = score_decades
        self._last_t: float | None = None
        self._warm: list[tuple[float, float]] | None = []
        # value transform y = log(x + offset), sqrt(x) or x, fixed at the end of probation
        self._kind: Transform = "none"
        self._offset = 0.0
        # time-of-day profile (None: off)
        self._bins: list[float] | None = None
        self._bin_visits: list[int] = []
        self._per_day = 0.0
        self._season_rate = 0.0
        self._base = 0.0
        self._innovation_sq = 0.0
        self._visits = 0
        self._profile_sum = 0.0
        self._profile_sq = 0.0
        self._first_t = 0.0
        # predictors
        self._recent = _Window(short_window)
        self._older = _Window(long_window)
        self._point = _Tail(history)
        self._shift = _Tail(history)
        self._sustained_point = _Sustained(smoothing, history)
        self._sustained_shift = _Sustained(_SHIFT_SMOOTHING, history)
        # flat line: decayed counts of unchanged steps, and of unchanged after unchanged
        self._keep = 1.0 - 1.0 / flat_memory
        self._prev_y: float | None = None
        self._prev_flat = False
        self._steps = 0.0
        self._flats = 0.0
        self._after_flat = 0.0
        self._flat_again = 0.0
        self._run = 0
        self._p_first = 1.0
        self._p_again = 1.0

    def update(self, timestamp: Timestamp, value: float | None) -> float:
        """Score one point: 0 normal .. 1 anomalous, from this point and the past only.

        ``timestamp`` must not be earlier than the previous one (equal is fine). A missing
        value (``None``, NaN, inf) scores 0.0 and leaves the state untouched.

        Raises:
            ValueError: the timestamp goes back in time or is not finite.
            TypeError: the timestamp is neither a datetime nor a number.
        """
        t = _seconds(timestamp)
        if self._last_t is not None and t < self._last_t:
            raise ValueError(
                f"timestamp {t} is earlier than the previous one {self._last_t}: "
                "feed each series in time order"
            )
        self._last_t = t
        if value is None:
            return 0.0
        x = float(value)
        if not math.isfinite(x):
            return 0.0
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
        """Fix the transform and the time-of-day profile from probation, then learn from it."""
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
        gaps = sorted(b[0] - a[0] for a, b in pairwise(warm) if b[0] > a[0])
        if self._seasonal and gaps:
            per_day = _DAY_S / gaps[len(gaps) // 2]
            if per_day >= _SEASON_MIN_PER_DAY:
                bins = min(_SEASON_BINS_MAX, round(per_day))
                self._bins = [0.0] * bins
                self._bin_visits = [0] * bins
                self._per_day = per_day
                self._season_rate = min(1.0, _SEASON_RATE * bins / per_day)
                self._first_t = warm[0][0]
                self._base = self._transform(warm[0][1])
        for t, x in warm:
            self._step(t, x)

    def _transform(self, x: float) -> float:
        if self._kind == "log":
            return math.log(max(x, 0.0) + self._offset)
        if self._kind == "sqrt":
            return math.sqrt(max(x, 0.0))
        return x

    def _deseason(self, t: float, y: float) -> float:
        """``y`` minus the learned time-of-day profile, which then learns from ``y``.

        The profile is shrunk towards zero by how much of its spread is noise (James-Stein
        style): a series without a daily cycle gets (almost) nothing subtracted, so the
        profile cannot add noise; it fades in over the second day, once a day has been seen.
        """
        bins = self._bins
        if bins is None:
            return y
        nbins = len(bins)
        b = int((t % _DAY_S) * nbins / _DAY_S)
        old = bins[b]
        mean = self._profile_sum / nbins
        spread = self._profile_sq / nbins - mean * mean
        weight = 0.0
        if spread > 0.0 and self._visits > 0:
            rate = self._season_rate
            noise = self._innovation_sq * max(rate / (2.0 - rate), nbins / self._visits)
            ramp = min(1.0, max(0.0, (t - self._first_t) / _DAY_S - 1.0))
            weight = ramp * max(0.0, 1.0 - noise / spread)
        residual = y - weight * old
        step = y - self._base - old
        self._base += (y - self._base) / self._per_day
        if self._innovation_sq > 0.0:
            limit = _SEASON_CLIP * math.sqrt(self._innovation_sq)
            step = max(-limit, min(limit, step))
        self._innovation_sq += (step * step - self._innovation_sq) / self._per_day
        self._bin_visits[b] += 1
        self._visits += 1
        new = old + step * max(self._season_rate, 1.0 / self._bin_visits[b])
        bins[b] = new
        self._profile_sum += new - old
        self._profile_sq += new * new - old * old
        return residual

    def _flat_p(self, y: float) -> float:
        """Probability of the current run of unchanged values, from a two-state Markov chain.

        Counting "unchanged after unchanged" separately means series whose repeats come in
        runs (quantised, idle) learn that long runs are normal, while a noisy series that
        suddenly repeats itself is flagged within a few points.
        """
        prev = self._prev_y
        self._prev_y = y
        if prev is None:
            return 1.0
        tolerance = _FLAT_RELATIVE * self._point.median() + 1e-12 * abs(y)
        flat = abs(y - prev) <= tolerance
        p = 1.0
        if flat:
            if self._run == 0:
                # Judged by the odds before the run: a run must not make itself normal.
                self._p_first = (self._flats + 1.0) / (self._steps + 2.0)
                self._p_again = (self._flat_again + 1.0) / (self._after_flat + 2.0)
            self._run += 1
            p = self._p_first * self._p_again ** (self._run - 1)
        else:
            self._run = 0
        keep = self._keep
        if self._prev_flat:
            self._after_flat = self._after_flat * keep + 1.0
            self._flat_again = self._flat_again * keep + flat
        self._prev_flat = flat
        self._steps = self._steps * keep + 1.0
        self._flats = self._flats * keep + flat
        return p

    def _step(self, t: float, x: float) -> float:
        y = self._transform(x)
        p_flat = self._flat_p(y)
        r = self._deseason(t, y)
        eps = 1e-9 * abs(r) + 1e-300
        recent = self._recent
        p = 1.0
        if len(recent) >= 2:
            p_point = self._point.observe(abs(r - recent.median()), eps)
            if p_point is not None:
                p = min(p, p_point, self._sustained_point.observe(p_point) or 1.0)
        fell_out = recent.push(r)
        if fell_out is not None:
            self._older.push(fell_out)
        if len(self._older) * 2 >= self._older.size:
            p_shift = self._shift.observe(abs(recent.median() - self._older.median()), eps)
            if p_shift is not None:
                p = min(p, p_shift, self._sustained_shift.observe(p_shift) or 1.0)
        p = max(_TESTS * min(p, p_flat), _P_FLOOR)
        return min(1.0, max(0.0, -math.log10(p) / self._decades))

"""StreamingDetector on the Numenta Anomaly Benchmark (NAB), beside a windowed-Gaussian baseline.

NAB (https://github.com/numenta/NAB, AGPL-3.0, so it is never copied into this repository) is
58 labelled series, real and artificial, in seven categories (``real*``: 47 real series).
Pass ``--nab PATH``, a directory holding NAB's ``data/`` and ``labels/combined_windows.json``,
e.g. made with::

    git clone https://github.com/numenta/NAB /tmp/NAB   # or: git archive HEAD data labels

Both detectors score every series from its first point (no look-ahead). As in NAB, the first
15% of each series (at most 750 points) is probation and not judged. At ``--threshold``, per
category, over the real series and overall:

* ``share_above_outside``: share of points outside the labelled windows scoring >= threshold
  (the false-alarm rate per point, to compare with the documented calibration); and
  ``share_above_outside_moving``, the same without the points that repeat the previous value
  (alarms in runs of unchanged values, i.e. stuck or idle stretches);
* ``share_ge_0999``: share of judged points scoring >= 0.999 (saturation);
* ``recall``: labelled windows with at least one point scoring >= threshold;
* ``false_alarms_per_1000``: runs of alarms starting outside every window, per 1,000 points
  outside the windows;
* ``nab_standard``: NAB's normalised score with the standard profile (TP 1, FP 0.11, FN 1),
  the threshold optimised over the category's series, as NAB's own scorer does.

The baseline is NAB's windowed Gaussian: ``1 - Q(|x - mean| / std)`` over the last 6,400
values, the window advanced every 100 values.

    .venv/bin/python -m bench.streaming_nab --nab /tmp/NAB [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erfc

from bench.common import emit
from cloud.detectors.streaming import StreamingDetector

PROBATION_SHARE = 0.15
PROBATION_MAX = 750
GAUSSIAN_WINDOW = 6400
GAUSSIAN_STEP = 100
TP_WEIGHT, FP_WEIGHT, FN_WEIGHT = 1.0, 0.11, 1.0  # NAB's "standard" profile


@dataclass(frozen=True)
class Series:
    name: str
    category: str
    timestamps: np.ndarray  # seconds since the epoch
    values: np.ndarray
    windows: list[tuple[int, int]]  # inclusive point indices, as NAB labels them

    @property
    def probation(self) -> int:
        return min(math.floor(PROBATION_SHARE * len(self.values)), PROBATION_MAX)


def load(root: Path) -> list[Series]:
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    out: list[Series] = []
    for name, windows in sorted(labels.items()):
        rows = np.genfromtxt(
            root / "data" / name, delimiter=",", skip_header=1, dtype=None, encoding="utf-8"
        )
        ts = np.array([r[0] for r in rows], dtype="datetime64[s]").astype(np.int64)
        values = np.array([r[1] for r in rows], dtype=float)
        limits = np.array(windows, dtype="datetime64[s]").astype(np.int64).reshape(-1, 2)
        # First point at or after the start, last at or before the end (a few series step back).
        spans = [
            (int(np.argmax(ts >= lo)), len(ts) - 1 - int(np.argmax(ts[::-1] <= hi)))
            for lo, hi in limits
        ]
        out.append(Series(name, name.split("/")[0], ts.astype(float), values, spans))
    return out


def streaming(series: Series) -> np.ndarray:
    detector = StreamingDetector()
    return np.array(detector.score_series(series.timestamps.tolist(), series.values.tolist()))


def windowed_gaussian(series: Series) -> np.ndarray:
    """NAB's windowedGaussian detector, vectorised: each point against the window before it."""
    x = series.values - series.values[0]  # shifted: sums of squares lose less precision
    n = len(x)
    scores = np.zeros(n)
    # The window's statistics seen by point i: the first 6,400 points grow it one by one,
    # after which it moves by 100 points once 100 new ones have arrived.
    csum = np.concatenate(([0.0], np.cumsum(x)))
    csq = np.concatenate(([0.0], np.cumsum(x * x)))
    i = np.arange(1, n)
    full = i > GAUSSIAN_WINDOW
    end = np.where(
        full, GAUSSIAN_WINDOW + (i - GAUSSIAN_WINDOW) // GAUSSIAN_STEP * GAUSSIAN_STEP, i
    )
    start = np.where(full, end - GAUSSIAN_WINDOW, 0)
    count = end - start
    mean = (csum[end] - csum[start]) / count
    var = np.maximum((csq[end] - csq[start]) / count - mean * mean, 0.0)
    std = np.sqrt(var)
    std[std == 0.0] = 1e-6
    scores[1:] = 1.0 - 0.5 * erfc(np.abs(x[1:] - mean) / std / math.sqrt(2.0))
    return scores


DETECTORS: dict[str, Callable[[Series], np.ndarray]] = {
    "streaming": streaming,
    "windowed_gaussian": windowed_gaussian,
}


def _sigmoid_weight(position: np.ndarray) -> np.ndarray:
    """NAB's scaled sigmoid: 1 at the window's left edge .. 0 at its right .. -1 beyond."""
    return np.where(position > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0)


def _sweep_parts(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Per point: NAB's weighted reward if detected, and the index of its window (-1: none)."""
    n = len(series.values)
    reward = np.full(n, -FP_WEIGHT)
    window = np.full(n, -1)
    idx = np.arange(n)
    max_tp = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    previous: tuple[int, int] | None = None
    bounds = [*series.windows, (n, n)]
    for k, (lo, hi) in enumerate(bounds):
        gap_lo = previous[1] + 1 if previous else 0
        if previous is not None:
            width = previous[1] - previous[0] + 1
            past = np.abs(previous[1] - idx[gap_lo:lo]) / max(width - 1, 1)
            reward[gap_lo:lo] = _sigmoid_weight(past) * FP_WEIGHT
        if lo < n:
            width = hi - lo + 1
            reward[lo : hi + 1] = (
                _sigmoid_weight(-(hi - idx[lo : hi + 1] + 1) / width) * TP_WEIGHT / max_tp
            )
            window[lo : hi + 1] = k
        previous = (lo, hi)
    return reward, window


def nab_score(judged: list[tuple[Series, np.ndarray]]) -> float | None:
    """NAB's normalised score (0 = no detections, 100 = perfect), threshold optimised."""
    scores, rewards, windows = [], [], []
    offset = 0
    for series, s in judged:
        reward, window = _sweep_parts(series)
        p = series.probation
        scores.append(s[p:])
        rewards.append(reward[p:])
        windows.append(np.where(window[p:] >= 0, window[p:] + offset, -1))
        offset += len(series.windows)
    score = np.concatenate(scores)
    reward = np.concatenate(rewards)
    window = np.concatenate(windows)
    labelled = np.unique(window[window >= 0])
    if not len(labelled):
        return None
    best_in = dict.fromkeys(labelled.tolist(), -FN_WEIGHT)
    total = -FN_WEIGHT * len(labelled)
    best = total
    order = np.argsort(-score, kind="stable")
    ordered_score = score[order]
    for j, i in enumerate(order.tolist()):
        w = int(window[i])
        if w < 0:
            total += reward[i]
        elif reward[i] > best_in[w]:
            total += reward[i] - best_in[w]
            best_in[w] = reward[i]
        # A threshold detects every point at or above it: only a change of score is a cut.
        if j + 1 == len(order) or ordered_score[j + 1] != ordered_score[j]:
            best = max(best, total)
    null = -FN_WEIGHT * len(labelled)
    perfect = TP_WEIGHT * len(labelled)
    return round(float(100.0 * (best - null) / (perfect - null)), 1)


def figures(judged: list[tuple[Series, np.ndarray]], threshold: float) -> dict[str, Any]:
    outside_points = outside_alarms = false_runs = judged_points = saturated = 0
    stuck_alarms = 0
    windows = detected = 0
    for series, s in judged:
        p = series.probation
        inside = np.zeros(len(s), dtype=bool)
        for lo, hi in series.windows:
            inside[lo : hi + 1] = True
            windows += 1
            detected += bool((s[lo : hi + 1] >= threshold).any())
        alarm = s >= threshold
        outside = ~inside
        outside[:p] = False
        starts = alarm & ~np.concatenate(([False], alarm[:-1]))
        outside_points += int(outside.sum())
        outside_alarms += int((alarm & outside).sum())
        repeat = np.concatenate(([False], series.values[1:] == series.values[:-1]))
        stuck_alarms += int((alarm & outside & repeat).sum())
        false_runs += int((starts & outside).sum())
        judged_points += len(s) - p
        saturated += int((s[p:] >= 0.999).sum())
    return {
        "series": len(judged),
        "points_outside": outside_points,
        "share_above_outside": round(outside_alarms / outside_points, 5),
        "share_above_outside_moving": round((outside_alarms - stuck_alarms) / outside_points, 5),
        "share_ge_0999": round(saturated / judged_points, 5),
        "windows": windows,
        "recall": round(detected / windows, 3) if windows else None,
        "false_alarms_per_1000": round(1000.0 * false_runs / outside_points, 3),
        "nab_standard": nab_score(judged),
    }


def evaluate(root: Path, threshold: float) -> dict[str, Any]:
    corpus = load(root)
    out: dict[str, Any] = {"threshold": threshold, "series": len(corpus)}
    for name, detect in DETECTORS.items():
        start = time.perf_counter()
        scored = [(series, detect(series)) for series in corpus]
        elapsed = time.perf_counter() - start
        by_category: dict[str, list[tuple[Series, np.ndarray]]] = defaultdict(list)
        for series, s in scored:
            by_category[series.category].append((series, s))
        real = [(series, s) for series, s in scored if series.category.startswith("real")]
        out[name] = {
            "seconds": round(elapsed, 1),
            "overall": figures(scored, threshold),
            "real": figures(real, threshold),
            "categories": {c: figures(j, threshold) for c, j in sorted(by_category.items())},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True, help="holds NAB's data/ and labels/")
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    emit("streaming_detector_nab", evaluate(args.nab, args.threshold))


if __name__ == "__main__":
    main()

"""cloud.detectors.streaming.StreamingDetector: cost per update, and detection on labelled series.

Speed: one detector fed a 20,000-point noisy daily-seasonal series at 5-minute steps (the
probation replay included); microseconds per update, median over ``--rounds``.

Quality: families of labelled series, ``--seeds`` of each, 3,000 points at 5-minute steps
(about ten days) with unit Gaussian noise, a daily cycle of amplitude 3 and a slow AR(1)
wander, each with one kind of anomaly injected after the probation period (or none, for the
``clean*`` families). A point is an alarm when its score is >= ``--threshold``; an alarm event
is a run of consecutive alarm points. As in NAB, each anomaly has a window, here from
``WINDOW_BEFORE`` points before its start to ``WINDOW_AFTER`` points after its end: a window
with an alarm in it is a true positive (once, however many alarms), a window without one a
false negative, and an alarm event that starts outside every window a false positive.
Per family: precision, recall, F1, the median delay (points from anomaly start to the first
alarm in its window) and false-positive events per 1,000 points.

    .venv/bin/python -m bench.streaming_detector [--rounds 5] [--seeds 10] [--threshold 0.9]

With ``--nab PATH`` (a directory holding the Numenta Anomaly Benchmark's ``data/`` and
``labels/``) it also prints a second JSON line: the detector on NAB's 58 real and artificial
series beside NAB's windowed-Gaussian baseline (see bench/streaming_nab.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import streaming_nab
from bench.common import emit, median
from cloud.detectors.streaming import StreamingDetector

STEP_S = 300.0
START_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LENGTH = 3000
ONSET_MIN = 600  # anomalies start after probation and some scored history
WINDOW_BEFORE = 10
WINDOW_AFTER = 60

Rng = np.random.Generator


@dataclass(frozen=True)
class Labelled:
    timestamps: list[float]
    values: list[float]
    anomalies: list[tuple[int, int]]  # [start, end) point indices


def base(rng: Rng, n: int = LENGTH, amplitude: float = 3.0) -> np.ndarray:
    """Unit noise, a daily cycle and a slow AR(1) wander: the normal behaviour."""
    t = np.arange(n) * STEP_S
    wander = np.zeros(n)
    steps = rng.normal(0.0, 0.1, n)
    for i in range(1, n):
        wander[i] = 0.995 * wander[i - 1] + steps[i]
    cycle = amplitude * np.sin(2 * np.pi * (t / 86_400.0 + rng.uniform()))
    values: np.ndarray = 20.0 + cycle + wander + rng.normal(0.0, 1.0, n)
    return values


def onset(rng: Rng, n: int = LENGTH) -> int:
    return int(rng.integers(ONSET_MIN, n - 300))


def labelled(values: np.ndarray, anomalies: list[tuple[int, int]]) -> Labelled:
    timestamps = [START_S + i * STEP_S for i in range(len(values))]
    return Labelled(timestamps, [float(v) for v in values], anomalies)


def spike(rng: Rng) -> Labelled:
    x = base(rng)
    at = [onset(rng), onset(rng)]
    at.sort()
    if at[1] - at[0] < 200:
        at = [at[0]]
    for i in at:
        x[i] += rng.uniform(7.0, 10.0)
    return labelled(x, [(i, i + 1) for i in at])


def dip(rng: Rng) -> Labelled:
    x = base(rng)
    i = onset(rng)
    x[i] -= rng.uniform(7.0, 10.0)
    return labelled(x, [(i, i + 1)])


def level_shift(rng: Rng) -> Labelled:
    x = base(rng)
    i = onset(rng)
    x[i:] += rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 6.0)
    return labelled(x, [(i, i + 1)])


def variance_change(rng: Rng) -> Labelled:
    x = base(rng)
    i = onset(rng)
    x[i : i + 200] += rng.normal(0.0, 3.0, 200)
    return labelled(x, [(i, i + 200)])


def flat_line(rng: Rng) -> Labelled:
    x = base(rng)
    i = onset(rng)
    x[i : i + 100] = x[i - 1]
    return labelled(x, [(i, i + 100)])


def trend(rng: Rng) -> Labelled:
    x = base(rng)
    i = onset(rng)
    x[i:] += rng.choice([-1.0, 1.0]) * 0.05 * np.arange(LENGTH - i)
    return labelled(x, [(i, i + 300)])


def seasonal_break(rng: Rng) -> Labelled:
    """The daily cycle stops for six hours: the values stay where they were."""
    x = base(rng, amplitude=6.0)
    i = onset(rng)
    x[i : i + 72] = x[i - 1] + rng.normal(0.0, 1.0, 72)
    return labelled(x, [(i, i + 72)])


def latency_spike(rng: Rng) -> Labelled:
    """Log-normal request latencies (ms) with a burst of slow requests."""
    x = np.exp(rng.normal(np.log(80.0), 0.4, LENGTH))
    i = onset(rng)
    x[i : i + 5] *= 8.0
    return labelled(x, [(i, i + 5)])


def traffic_drop(rng: Rng) -> Labelled:
    """Poisson counts with a daily cycle that drop to zero (an outage) for an hour."""
    t = np.arange(LENGTH) * STEP_S
    rate = 40.0 + 25.0 * np.sin(2 * np.pi * t / 86_400.0)
    x = rng.poisson(rate).astype(float)
    i = onset(rng)
    x[i : i + 12] = 0.0
    return labelled(x, [(i, i + 12)])


def clean(rng: Rng) -> Labelled:
    return labelled(base(rng), [])


def clean_latency(rng: Rng) -> Labelled:
    return labelled(np.exp(rng.normal(np.log(80.0), 0.4, LENGTH)), [])


def clean_counts(rng: Rng) -> Labelled:
    t = np.arange(LENGTH) * STEP_S
    return labelled(rng.poisson(40.0 + 25.0 * np.sin(2 * np.pi * t / 86_400.0)).astype(float), [])


FAMILIES: dict[str, Callable[[Rng], Labelled]] = {
    "spike": spike,
    "dip": dip,
    "level_shift": level_shift,
    "variance_change": variance_change,
    "flat_line": flat_line,
    "trend": trend,
    "seasonal_break": seasonal_break,
    "latency_spike": latency_spike,
    "traffic_drop": traffic_drop,
    "clean": clean,
    "clean_latency": clean_latency,
    "clean_counts": clean_counts,
}


@dataclass
class Tally:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    points: int = 0
    alarm_points: int = 0

    def add(self, series: Labelled, scores: list[float], threshold: float) -> list[int]:
        """Count one series; return the delays of its detected anomalies."""
        alarms = [s >= threshold for s in scores]
        windows = [
            (max(0, a - WINDOW_BEFORE), min(len(scores), b + WINDOW_AFTER))
            for a, b in series.anomalies
        ]
        delays: list[int] = []
        for (lo, hi), (a, _) in zip(windows, series.anomalies, strict=True):
            hits = [i for i in range(lo, hi) if alarms[i]]
            if hits:
                self.tp += 1
                delays.append(hits[0] - a)
            else:
                self.fn += 1
        for i, alarm in enumerate(alarms):
            starts_event = alarm and (i == 0 or not alarms[i - 1])
            if starts_event and not any(lo <= i < hi for lo, hi in windows):
                self.fp += 1
        self.points += len(scores)
        self.alarm_points += sum(alarms)
        return delays


def quality(seeds: int, threshold: float) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, dict[str, float | int | None]] = {}
    for index, (name, make) in enumerate(FAMILIES.items()):
        tally = Tally()
        delays: list[int] = []
        for seed in range(seeds):
            series = make(np.random.default_rng([index, seed]))
            scores = StreamingDetector().score_series(series.timestamps, series.values)
            delays += tally.add(series, scores, threshold)
        detected = tally.tp + tally.fp
        precision = tally.tp / detected if detected else None
        labelled_count = tally.tp + tally.fn
        recall = tally.tp / labelled_count if labelled_count else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        out[name] = {
            "anomalies": labelled_count,
            "precision": None if precision is None else round(precision, 3),
            "recall": None if recall is None else round(recall, 3),
            "f1": None if f1 is None else round(f1, 3),
            "median_delay_points": median(delays) if delays else None,
            "fp_events_per_1000": round(1000 * tally.fp / tally.points, 3),
            "alarm_point_share": round(tally.alarm_points / tally.points, 4),
        }
    return out


def us_per_update(points: int) -> float:
    rng = np.random.default_rng(1)
    series = labelled(base(rng, n=points), [])
    detector = StreamingDetector()
    start = time.perf_counter()
    for t, v in zip(series.timestamps, series.values, strict=True):
        detector.update(t, v)
    return (time.perf_counter() - start) / points * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--nab", type=Path, help="a directory holding NAB's data/ and labels/")
    args = parser.parse_args()
    speed = [us_per_update(args.points) for _ in range(args.rounds)]
    emit(
        "streaming_detector",
        {
            "us_per_update": round(median(speed), 2),
            "threshold": args.threshold,
            "window_points": [-WINDOW_BEFORE, WINDOW_AFTER],
            "series_points": LENGTH,
            "seeds": args.seeds,
            "families": quality(args.seeds, args.threshold),
        },
    )
    if args.nab is not None:
        emit("streaming_detector_nab", streaming_nab.evaluate(args.nab, args.threshold))


if __name__ == "__main__":
    main()

"""cloud.detectors.streaming.StreamingDetector: what a user of the scores relies on."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.detectors.streaming import StreamingDetector

STEP_S = 300.0
START_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
THRESHOLD = 0.9


def times(n: int) -> list[float]:
    return [START_S + i * STEP_S for i in range(n)]


def seasonal(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    """Unit noise around a daily cycle of amplitude 3, sampled every 5 minutes."""
    t = np.arange(n) * STEP_S
    values: np.ndarray = 20.0 + 3.0 * np.sin(2 * np.pi * t / 86_400.0) + rng.normal(0.0, 1.0, n)
    return values


def scores_of(values: np.ndarray | list[float]) -> list[float]:
    return StreamingDetector().score_series(times(len(values)), list(values))


def alarms(scores: list[float], lo: int = 0, hi: int | None = None) -> list[int]:
    return [i for i, s in enumerate(scores[lo:hi], start=lo) if s >= THRESHOLD]


def test_probation_scores_zero() -> None:
    rng = np.random.default_rng(1)
    values = seasonal(rng, 400)
    values[50] += 50.0
    scores = scores_of(values)
    assert scores[:200] == [0.0] * 200


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=64),
            st.floats(min_value=-1e6, max_value=1e6),
            st.none(),
        ),
        max_size=300,
    ),
    gaps=st.lists(st.sampled_from([0.0, 0.5, 1.0, 60.0, 300.0, 7200.0]), min_size=300),
)
def test_scores_always_in_half_open_unit_interval(
    values: list[float | None], gaps: list[float]
) -> None:
    detector = StreamingDetector(probation=20, history=100)
    t = START_S
    for value, gap in zip(values, gaps, strict=False):
        t += gap
        score = detector.update(t, value)
        assert 0.0 <= score < 1.0
        assert not math.isnan(score)


def test_no_look_ahead() -> None:
    """The score of point i is the same whether or not later points were fed."""
    rng = np.random.default_rng(2)
    values = seasonal(rng, 1500)
    values[700:] += 6.0
    values[900] -= 12.0
    full = scores_of(values)
    for cut in (250, 701, 901, 1200):
        assert scores_of(values[:cut]) == full[:cut]


def test_deterministic_and_timestamp_forms_agree() -> None:
    rng = np.random.default_rng(3)
    values = list(seasonal(rng, 800))
    as_seconds = StreamingDetector().score_series(times(800), values)
    as_ints = StreamingDetector().score_series([int(t) for t in times(800)], values)
    start = datetime.fromtimestamp(START_S, tz=UTC)
    as_datetimes = StreamingDetector().score_series(
        [start + timedelta(seconds=i * STEP_S) for i in range(800)], values
    )
    naive = [d.replace(tzinfo=None) for d in (start + timedelta(minutes=5 * i) for i in range(800))]
    as_naive = StreamingDetector().score_series(naive, values)
    assert as_seconds == as_ints == as_datetimes == as_naive
    assert as_seconds == StreamingDetector().score_series(times(800), values)


def test_out_of_order_and_repeated_timestamps_are_counted_and_skipped() -> None:
    """Real feeds step back now and then: such a point scores 0 and changes nothing."""
    rng = np.random.default_rng(12)
    values = list(seasonal(rng, 600))
    clean = scores_of(values)
    detector = StreamingDetector()
    fed: list[float] = []
    for i, (t, v) in enumerate(zip(times(600), values, strict=True)):
        fed.append(detector.update(t, v))
        if i in (250, 400):
            assert detector.update(t - STEP_S, 1e6) == 0.0  # one step back
        if i in (300, 450, 500):
            assert detector.update(t, -1e6) == 0.0  # the same timestamp again
    assert fed == clean
    assert detector.out_of_order == 5
    with pytest.raises(ValueError, match="finite"):
        detector.update(math.nan, 1.0)
    with pytest.raises(TypeError):
        detector.update("2026-01-01", 1.0)  # type: ignore[arg-type]


def test_missing_values_do_not_change_the_state() -> None:
    rng = np.random.default_rng(4)
    values = list(seasonal(rng, 600))
    clean = scores_of(values)
    detector = StreamingDetector()
    gappy: list[float] = []
    for t, v in zip(times(600), values, strict=True):
        assert detector.update(t, math.nan) == 0.0
        assert detector.update(t, None) == 0.0
        assert detector.update(t, math.inf) == 0.0
        gappy.append(detector.update(t, v))
    assert gappy == clean


def test_spike_in_seasonal_noise_scores_high_and_clean_data_stays_low() -> None:
    false_alarms = 0
    scored = 0
    for seed in range(4):
        rng = np.random.default_rng([5, seed])
        values = seasonal(rng)
        at = int(rng.integers(800, 2800))
        values[at] += rng.choice([-1.0, 1.0]) * 8.0
        scores = scores_of(values)
        assert scores[at] >= THRESHOLD, (seed, at, scores[at])
        others = [s for i, s in enumerate(scores[200:], start=200) if i != at]
        false_alarms += sum(s >= THRESHOLD for s in others)
        scored += len(others)
    assert false_alarms / scored < 0.01
    assert false_alarms <= 5


def test_level_shift_is_detected_then_forgotten() -> None:
    for seed in range(3):
        rng = np.random.default_rng([6, seed])
        values = seasonal(rng)
        values[1500:] += 5.0
        scores = scores_of(values)
        assert alarms(scores, 1500, 1505), seed
        assert not alarms(scores, 1600), (seed, alarms(scores, 1600))
        assert sum(scores[1600:]) / len(scores[1600:]) < 0.1


def test_flat_line_on_a_noisy_series_is_detected() -> None:
    rng = np.random.default_rng(7)
    values = seasonal(rng)
    values[1800:1900] = values[1799]
    scores = scores_of(values)
    assert alarms(scores, 1800, 1815)
    assert not alarms(scores, 200, 1800)


def test_repeats_that_are_normal_for_the_series_are_not_flagged() -> None:
    """Coarsely quantised values repeat all the time: runs of repeats are not anomalies."""
    rng = np.random.default_rng(8)
    values = np.round(seasonal(rng) / 2.0) * 2.0
    assert not alarms(scores_of(values), 200)


def test_lognormal_latency_spike() -> None:
    rng = np.random.default_rng(9)
    latency_ms = np.exp(rng.normal(math.log(80.0), 0.5, 3000))
    latency_ms[2000:2003] *= 10.0
    scores = scores_of(latency_ms)
    assert alarms(scores, 2000, 2003)
    assert len(alarms(scores, 200, 2000)) + len(alarms(scores, 2100)) <= 3


def test_poisson_traffic_drop_to_zero() -> None:
    rng = np.random.default_rng(10)
    t = np.arange(3000) * STEP_S
    counts = rng.poisson(40.0 + 25.0 * np.sin(2 * np.pi * t / 86_400.0)).astype(float)
    counts[2200:2212] = 0.0
    scores = scores_of(counts)
    assert alarms(scores, 2200, 2203)
    assert len(alarms(scores, 200, 2200)) <= 2


def test_variance_increase_is_detected() -> None:
    rng = np.random.default_rng(11)
    values = seasonal(rng)
    values[2000:2200] += rng.normal(0.0, 4.0, 200)
    scores = scores_of(values)
    assert alarms(scores, 2000, 2050)
    assert len(alarms(scores, 200, 2000)) <= 2


def test_invalid_tunables_are_rejected() -> None:
    with pytest.raises(ValueError):
        StreamingDetector(probation=0)
    with pytest.raises(ValueError):
        StreamingDetector(score_decades=0.0)


def test_a_series_that_was_always_flat_never_alarms() -> None:
    scores = scores_of([45.0] * 4032)
    assert not alarms(scores)
    assert max(scores) < 0.5


def test_idle_periods_of_varied_length_are_normal() -> None:
    """Idle series (disk writes, key presses) sit at zero for heavy-tailed stretches."""
    rng = np.random.default_rng(13)
    values: list[float] = []
    while len(values) < 5000:
        values += list(rng.lognormal(math.log(500.0), 1.0, int(rng.integers(3, 15))))
        values += [0.0] * int(rng.lognormal(math.log(30.0), 0.6))
    assert not alarms(scores_of(values), 200)


def test_idle_series_stuck_far_longer_than_ever_is_detected() -> None:
    rng = np.random.default_rng(14)
    values: list[float] = []
    while len(values) < 3000:
        values += list(rng.lognormal(math.log(500.0), 1.0, int(rng.integers(3, 15))))
        values += [0.0] * int(rng.integers(5, 20))
    stuck_at = len(values)
    values += [0.0] * 400
    scores = scores_of(values)
    assert alarms(scores, stuck_at, stuck_at + 400)
    assert not alarms(scores, 200, stuck_at)


def test_weekday_weekend_difference_is_learned() -> None:
    """Weekends are 6 noise sd lower: from the third week on, Saturdays are expected."""
    week = 7 * 288
    t = np.arange(4 * week) * STEP_S
    weekday = (t // 86_400.0 + 3) % 7  # 0 is Monday; START_S is a Thursday
    for seed in range(3):
        values = seasonal(np.random.default_rng([15, seed]), 4 * week)
        values[weekday >= 5] -= 6.0
        scores = scores_of(values)
        assert alarms(scores, 0, 2 * week), seed  # new at first: the first weekends alarm
        assert len(alarms(scores, 2 * week)) <= 1, (seed, alarms(scores, 2 * week))
        assert not alarms(scores, 3 * week), seed


def test_scores_keep_ordering_the_rarest_points() -> None:
    """A larger spike always scores higher, and no score saturates at 1."""
    rng = np.random.default_rng(16)
    values = seasonal(rng, 1000)
    scores = []
    for size in (10.0, 30.0, 1e2, 1e4, 1e8, 1e15):
        spiked = values.copy()
        spiked[900] += size
        scores.append(scores_of(spiked)[900])
    assert scores[0] >= THRESHOLD
    assert all(a < b for a, b in pairwise(scores)), scores
    assert scores[-1] < 1.0

"""Trained models built in memory, for detector tests at unit level.

What `tillpulse cloud train` would have learned, stated directly: an ordinary
terminal (no payments expected, 5 % declined, a 20.00 median basket) unless a
test says otherwise, every field overridable.
"""

from __future__ import annotations

import math
from typing import Any

from cloud.detectors.trained_model import (
    HOURS_PER_WEEK,
    AcquirerBaseline,
    Baseline,
    Baselines,
    TerminalBaseline,
    TrainedModel,
)

USUAL: dict[str, Any] = {
    "rate_per_hour": [0.0] * HOURS_PER_WEEK,
    "decline_rate": 0.05,
    "amount_log_median": math.log(2000),
    "amount_log_sigma": 0.8,
    "temperature_p50": 30.0,
    "temperature_p99": 40.0,
}


def usual_baseline(**overrides: Any) -> Baseline:
    """A profile's (or the fleet's) baseline."""
    return Baseline(**{**USUAL, **overrides})


def terminal_baseline(
    site: str,
    *,
    acquirer: str = "acq",
    mcc: str = "5411",
    history_hours: float = 500.0,
    profile: int = 0,
    **overrides: Any,
) -> TerminalBaseline:
    """A terminal's own baseline (three weeks of history unless ``history_hours`` says)."""
    return TerminalBaseline(
        **{**USUAL, **overrides},
        site=site,
        acquirer=acquirer,
        mcc=mcc,
        profile=profile,
        history_hours=history_hours,
    )


def model_of(
    terminals: dict[str, TerminalBaseline],
    *,
    trained_to_ns: int,
    trained_from_ns: int = 0,
    window_s: int = 300,
    fleet: Baseline | None = None,
    acquirers: dict[str, AcquirerBaseline] | None = None,
) -> TrainedModel:
    """A model of these terminals, without profiles or a fraud model."""
    baselines = Baselines(
        trained_from_ns=trained_from_ns,
        trained_to_ns=trained_to_ns,
        window_s=window_s,
        terminals=terminals,
        profiles=[],
        profile_by_mcc={},
        fleet=fleet or usual_baseline(),
        acquirers=acquirers or {},
    )
    return TrainedModel(baselines, None, None, {})

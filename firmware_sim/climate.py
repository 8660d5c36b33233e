"""Indoor climate at a site: the daily temperature and humidity cycle, and overheating."""

from __future__ import annotations

import math
from typing import Final

from firmware_sim.injections import Injection
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR

BASE_C: Final = 21.0
DAILY_SWING_C: Final = 2.0
BASE_HUMIDITY_PCT: Final = 45.0
DAILY_SWING_HUMIDITY_PCT: Final = 7.0
OVERHEAT_RAMP: Final = 0.25  # share of the window over which overheating builds up


def _daily_phase(ts_ns: int) -> float:
    """-1..1 over the day, warmest mid-afternoon (15:00 UTC)."""
    return math.sin(2 * math.pi * ((ts_ns - 9 * NS_PER_HOUR) % NS_PER_DAY) / NS_PER_DAY)


def ambient_c(ts_ns: int) -> float:
    return BASE_C + DAILY_SWING_C * _daily_phase(ts_ns)


def humidity_pct(ts_ns: int) -> float:
    return BASE_HUMIDITY_PCT - DAILY_SWING_HUMIDITY_PCT * _daily_phase(ts_ns)


def overheat_c(injection: Injection | None, ts_ns: int) -> float:
    """Extra degrees from an overheating injection: ramps up, then holds until its end."""
    if injection is None:
        return 0.0
    ramp_ns = max((injection.end_ns - injection.start_ns) * OVERHEAT_RAMP, 1.0)
    return injection.strength * min(1.0, (ts_ns - injection.start_ns) / ramp_ns)

"""How one site trades in a run: its merchant's pattern, reshaped by the scenario.

Three context shapes (none is an incident, none is labelled):

* opening hours that change from a day on (a merchant opens at 10 instead of 07);
* calendar days: a sale multiplies the day's volume, a closing day has none;
* the overdispersion of hourly counts: with ``[traffic] dispersion = D`` each
  hour's gamma factor (firmware_sim.merchants) gets variance ``(D - 1) / mu``
  for that hour's expected count ``mu``, so a terminal's count in any hour
  has variance ``D * mu``: D times Poisson, at every hour and every volume.

A site none of them touches trades as its merchant profile, draw for draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from firmware_sim.merchants import MerchantProfile, next_arrival
from firmware_sim.simtime import hour_of_week
from wire.timestamps import NS_PER_DAY


@dataclass(frozen=True, slots=True)
class HoursChange:
    from_day: int  # UTC day number (days since the epoch) of the first day
    open: int | None  # the new opening hour, None: unchanged
    close: int | None


class SiteTrading:
    """A merchant profile with the scenario's changes to one site."""

    def __init__(
        self,
        merchant: MerchantProfile,
        *,
        hours: tuple[HoursChange, ...] = (),
        day_factors: dict[int, float] | None = None,
        dispersion: float | None = None,
    ) -> None:
        self.merchant = merchant
        self._hours = tuple(sorted(hours, key=lambda change: change.from_day))
        self._day_factors = dict(day_factors or {})  # UTC day number -> volume multiple
        self._dispersion = dispersion  # the scenario's variance/mean; None: the profile's

    def day_factor(self, ts_ns: int) -> float:
        """The volume multiple of the day (0 on a closing day, the factor on a sale day)."""
        return self._day_factors.get(ts_ns // NS_PER_DAY, 1.0)

    def window(self, ts_ns: int) -> tuple[int, int] | None:
        """Opening hours [open, close) on the day of ``ts_ns``; None if closed all day."""
        day = ts_ns // NS_PER_DAY
        if self._day_factors.get(day) == 0.0:
            return None
        window = self.merchant.hours[hour_of_week(ts_ns)[0]]
        if window is None:
            return None
        for change in reversed(self._hours):
            if change.from_day <= day:
                opens = window[0] if change.open is None else change.open
                closes = window[1] if change.close is None else change.close
                return opens, closes
        return window

    def is_open(self, ts_ns: int) -> bool:
        window = self.window(ts_ns)
        return window is not None and window[0] <= hour_of_week(ts_ns)[1] < window[1]

    def rate_per_hour(self, ts_ns: int) -> float:
        if not self.is_open(ts_ns):
            return 0.0
        merchant = self.merchant
        weekday, hour = hour_of_week(ts_ns)
        rate = merchant.peak_per_hour * merchant.hourly[hour] * merchant.weekday[weekday]
        return rate * self.day_factor(ts_ns)

    def hour_dispersion(self, rate: float) -> float:
        if self._dispersion is None:
            return self.merchant.dispersion
        return (self._dispersion - 1.0) / rate if rate > 0.0 else 0.0

    def next_arrival(self, rng: random.Random, after_ns: int, horizon_ns: int) -> int | None:
        return next_arrival(self, rng, after_ns, horizon_ns)

"""Merchant types: when a site is open, how busy it is, what it sells and how people pay.

A terminal's payment arrivals are a Poisson process whose rate is constant
within each hour: ``peak_per_hour * hourly[hour] * weekday[day]`` while the
site is open, zero while it is closed, times a gamma factor of mean 1 and
variance ``dispersion`` drawn for each terminal and clock hour (a busy hour, a
slow one: real counts vary more than Poisson). An hour's count is then
negative binomial, variance ``mu + dispersion * mu^2``. The factors come
from a key made from the terminal's generator when first asked (a digest of
its state, so no draw of its own is moved), so a run is determined by its seed.

A scenario reshapes this per site (firmware_sim.trading: `Trade` is what a
terminal asks): its opening hours, calendar days, and the dispersion.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
import weakref
from dataclasses import dataclass
from typing import Final, Protocol

from firmware_sim.simtime import hour_of_week
from wire.messages import PaymentMethod
from wire.timestamps import NS_PER_HOUR, NS_PER_S


class MerchantType(enum.StrEnum):
    GROCERY = "grocery"
    CAFE = "cafe"
    FUEL = "fuel"
    RETAIL = "retail"
    RESTAURANT = "restaurant"


@dataclass(frozen=True, slots=True)
class MerchantProfile:
    kind: MerchantType
    mcc: str  # ISO 18245 merchant category code
    hours: tuple[tuple[int, int] | None, ...]  # per weekday (Mon..Sun): [open, close) UTC hours
    hourly: tuple[float, ...]  # 24 relative weights, 1.0 = the peak hour
    weekday: tuple[float, ...]  # 7 factors, Mon..Sun
    peak_per_hour: float  # payments per terminal in a peak hour
    amount_median_minor: int
    amount_sigma: float  # of the log-normal amount distribution
    amount_min_minor: int
    amount_max_minor: int
    methods: tuple[tuple[PaymentMethod, float], ...]  # weights
    terminals_per_site: tuple[int, int]  # inclusive range
    portable: bool  # carried to the table: runs on battery while the site is open
    weight: float  # share of sites of this type in a fleet
    # variance of each hour's gamma factor (0: Poisson counts); at the peak an hour's count
    # varies (1 + dispersion * peak) times as much as Poisson
    dispersion: float = 0.0

    def rate_per_hour(self, ts_ns: int) -> float:
        """Expected payments per hour per terminal at ``ts_ns`` (0 while closed)."""
        day, hour = hour_of_week(ts_ns)
        return self.rate_at(day, hour)

    def rate_at(self, day: int, hour: int) -> float:
        window = self.hours[day]
        if window is None or not window[0] <= hour < window[1]:
            return 0.0
        return self.peak_per_hour * self.hourly[hour] * self.weekday[day]

    def is_open(self, ts_ns: int) -> bool:
        day, hour = hour_of_week(ts_ns)
        window = self.hours[day]
        return window is not None and window[0] <= hour < window[1]

    def draw_amount(self, rng: random.Random) -> int:
        value = rng.lognormvariate(math.log(self.amount_median_minor), self.amount_sigma)
        return max(self.amount_min_minor, min(self.amount_max_minor, round(value)))

    def hour_dispersion(self, rate: float) -> float:
        """The variance of the gamma factor of an hour whose rate is ``rate``."""
        return self.dispersion

    def next_arrival(self, rng: random.Random, after_ns: int, horizon_ns: int) -> int | None:
        return next_arrival(self, rng, after_ns, horizon_ns)


class Trade(Protocol):
    """How a site trades: a merchant profile, or one reshaped by a scenario
    (firmware_sim.trading)."""

    def rate_per_hour(self, ts_ns: int) -> float: ...

    def is_open(self, ts_ns: int) -> bool: ...

    def hour_dispersion(self, rate: float) -> float: ...

    def next_arrival(self, rng: random.Random, after_ns: int, horizon_ns: int) -> int | None: ...


def next_arrival(trade: Trade, rng: random.Random, after_ns: int, horizon_ns: int) -> int | None:
    """The next payment time after ``after_ns``, or None if none before ``horizon_ns``.

    Piecewise-constant Poisson process: draw an exponential gap at the current
    hour's rate; if it crosses the hour boundary, start again from the boundary
    (the process is memoryless). Closed hours are skipped without drawing.
    """
    t = after_ns
    while t < horizon_ns:
        hour_end = t - t % NS_PER_HOUR + NS_PER_HOUR
        rate = trade.rate_per_hour(t)
        dispersion = trade.hour_dispersion(rate)
        if rate > 0.0 and dispersion > 0.0:
            rate *= hour_factor(rng, t // NS_PER_HOUR, dispersion)
        if rate > 0.0:
            gap_ns = round(rng.expovariate(rate) * 3600 * NS_PER_S)
            if t + gap_ns < hour_end:
                return t + gap_ns if t + gap_ns < horizon_ns else None
        t = hour_end
    return None


class _Mixing:
    """One terminal's gamma factors: a key, and the factor of the newest hour asked for."""

    __slots__ = ("factor", "hour", "key")

    def __init__(self, key: int) -> None:
        self.key = key
        self.hour = -1
        self.factor = 1.0


# keyed by the terminal's own generator (firmware_sim.event_engine gives each its own)
_MIXING: Final[weakref.WeakKeyDictionary[random.Random, _Mixing]] = weakref.WeakKeyDictionary()


def hour_factor(rng: random.Random, hour: int, dispersion: float) -> float:
    """The gamma factor (mean 1, variance ``dispersion``) of clock hour ``hour`` (hours
    since the epoch) for the terminal whose generator is ``rng``: the same every time it
    is asked for, whatever was drawn in between."""
    mixing = _MIXING.get(rng)
    if mixing is None:  # the key: a digest of the generator's state, which it does not move
        digest = hashlib.blake2b(repr(rng.getstate()).encode(), digest_size=8).digest()
        mixing = _MIXING[rng] = _Mixing(int.from_bytes(digest, "big"))
    if mixing.hour != hour:
        shape = 1.0 / dispersion
        draw = random.Random((mixing.key << 32) + hour).gammavariate(shape, 1.0 / shape)
        mixing.hour, mixing.factor = hour, draw
    return mixing.factor


_EVERY_DAY = (8, 21)
_CARD_MIX = (
    (PaymentMethod.CONTACTLESS, 55.0),
    (PaymentMethod.CHIP, 24.0),
    (PaymentMethod.WALLET, 16.0),
    (PaymentMethod.SWIPE, 3.0),
    (PaymentMethod.MANUAL, 2.0),
)


def _curve(**peaks: float) -> tuple[float, ...]:
    """24 hourly weights: 0.05 by default, ``h13=1.0`` sets hour 13."""
    weights = [0.05] * 24
    for name, value in peaks.items():
        weights[int(name[1:])] = value
    return tuple(weights)


PROFILES: Final[dict[MerchantType, MerchantProfile]] = {
    MerchantType.GROCERY: MerchantProfile(
        kind=MerchantType.GROCERY,
        mcc="5411",
        hours=((7, 22),) * 6 + ((9, 18),),
        hourly=_curve(
            h7=0.3,
            h8=0.45,
            h9=0.5,
            h10=0.55,
            h11=0.7,
            h12=0.95,
            h13=0.9,
            h14=0.6,
            h15=0.6,
            h16=0.75,
            h17=1.0,
            h18=0.95,
            h19=0.7,
            h20=0.45,
            h21=0.3,
        ),
        weekday=(0.9, 0.85, 0.9, 0.95, 1.1, 1.25, 0.7),
        peak_per_hour=40.0,
        amount_median_minor=3200,
        amount_sigma=0.85,
        amount_min_minor=50,
        amount_max_minor=60_000,
        methods=_CARD_MIX,
        terminals_per_site=(3, 8),
        portable=False,
        weight=0.3,
        dispersion=0.03,
    ),
    MerchantType.CAFE: MerchantProfile(
        kind=MerchantType.CAFE,
        mcc="5814",
        hours=((6, 19),) * 5 + ((8, 18),) * 2,
        hourly=_curve(
            h6=0.4,
            h7=0.9,
            h8=1.0,
            h9=0.7,
            h10=0.55,
            h11=0.6,
            h12=0.9,
            h13=0.8,
            h14=0.5,
            h15=0.55,
            h16=0.5,
            h17=0.35,
            h18=0.2,
        ),
        weekday=(1.0, 1.0, 1.0, 1.0, 1.05, 0.8, 0.7),
        peak_per_hour=45.0,
        amount_median_minor=620,
        amount_sigma=0.45,
        amount_min_minor=150,
        amount_max_minor=6_000,
        methods=(
            (PaymentMethod.CONTACTLESS, 68.0),
            (PaymentMethod.WALLET, 22.0),
            (PaymentMethod.CHIP, 9.0),
            (PaymentMethod.SWIPE, 1.0),
        ),
        terminals_per_site=(1, 2),
        portable=False,
        weight=0.2,
        dispersion=0.03,
    ),
    MerchantType.FUEL: MerchantProfile(
        kind=MerchantType.FUEL,
        mcc="5541",
        hours=((6, 23),) * 7,
        hourly=_curve(
            h6=0.4,
            h7=0.85,
            h8=1.0,
            h9=0.6,
            h10=0.45,
            h11=0.5,
            h12=0.6,
            h13=0.55,
            h14=0.5,
            h15=0.6,
            h16=0.85,
            h17=1.0,
            h18=0.9,
            h19=0.55,
            h20=0.35,
            h21=0.25,
            h22=0.15,
        ),
        weekday=(1.0, 1.0, 1.0, 1.0, 1.1, 0.9, 0.75),
        peak_per_hour=22.0,
        amount_median_minor=5500,
        amount_sigma=0.35,
        amount_min_minor=500,
        amount_max_minor=15_000,
        methods=(
            (PaymentMethod.CHIP, 45.0),
            (PaymentMethod.CONTACTLESS, 35.0),
            (PaymentMethod.WALLET, 14.0),
            (PaymentMethod.SWIPE, 5.0),
            (PaymentMethod.MANUAL, 1.0),
        ),
        terminals_per_site=(2, 4),
        portable=False,
        weight=0.2,
        dispersion=0.03,
    ),
    MerchantType.RETAIL: MerchantProfile(
        kind=MerchantType.RETAIL,
        mcc="5651",
        hours=(_EVERY_DAY,) * 6 + (None,),
        hourly=_curve(
            h8=0.2,
            h9=0.3,
            h10=0.45,
            h11=0.6,
            h12=0.8,
            h13=0.9,
            h14=0.85,
            h15=0.9,
            h16=1.0,
            h17=0.95,
            h18=0.8,
            h19=0.5,
            h20=0.3,
        ),
        weekday=(0.8, 0.8, 0.85, 0.9, 1.1, 1.4, 0.0),
        peak_per_hour=14.0,
        amount_median_minor=4800,
        amount_sigma=0.9,
        amount_min_minor=300,
        amount_max_minor=150_000,
        methods=_CARD_MIX,
        terminals_per_site=(1, 4),
        portable=False,
        weight=0.2,
        dispersion=0.03,
    ),
    MerchantType.RESTAURANT: MerchantProfile(
        kind=MerchantType.RESTAURANT,
        mcc="5812",
        hours=((11, 23),) * 7,
        hourly=_curve(
            h11=0.25,
            h12=0.8,
            h13=1.0,
            h14=0.7,
            h15=0.2,
            h16=0.1,
            h17=0.2,
            h18=0.45,
            h19=0.8,
            h20=0.95,
            h21=0.75,
            h22=0.4,
        ),
        weekday=(0.7, 0.75, 0.8, 0.9, 1.2, 1.35, 1.0),
        peak_per_hour=12.0,
        amount_median_minor=4500,
        amount_sigma=0.6,
        amount_min_minor=400,
        amount_max_minor=80_000,
        methods=(
            (PaymentMethod.CONTACTLESS, 45.0),
            (PaymentMethod.CHIP, 35.0),
            (PaymentMethod.WALLET, 17.0),
            (PaymentMethod.SWIPE, 2.0),
            (PaymentMethod.MANUAL, 1.0),
        ),
        terminals_per_site=(1, 3),
        portable=True,
        weight=0.1,
        dispersion=0.03,
    ),
}

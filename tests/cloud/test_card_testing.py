"""Card testing: slow, spread and above 2.00 caught; normal keyed-in trade left alone.

Unit level, with a model built in memory: each shop's terminals have a baseline
of ln(amount) (median, robust sigma) as `tillpulse cloud train` would learn it.
Normal trade is drawn window by window (5 minutes, open 07-21): Poisson arrivals,
log-normal amounts, a share keyed in by hand (declined 14 % of the time, as the
simulator's keyed-in payments are, mostly with card codes), a third of the
payments on regulars' cards. Probes are keyed in on fresh cards, 85 % declined
with 05/14/54. Each window goes through `group_by_terminal` and `card_testing`,
and the findings through an `AlertManager`, as a detection cycle does.

Run ``python -m tests.cloud.test_card_testing`` for the figures in docs/detectors.md.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

from cloud.detectors.card_testing import (
    CardTestingSettings,
    card_testing,
    low_value_limit,
)
from cloud.detectors.carried_state import Memory
from cloud.detectors.findings import Finding
from cloud.detectors.fraud_features import group_by_terminal
from cloud.detectors.payments import PaymentSettings, payment_findings
from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.alert_lifecycle import AlertManager
from cloud.reading.influxql_reader import Table
from testkit import models
from wire.incidents import AlertType
from wire.messages import AlertStatus
from wire.timestamps import NS_PER_HOUR, NS_PER_S, parse_iso

WINDOW_NS = 300 * NS_PER_S
DAY_START = parse_iso("2026-11-02T00:00:00Z")  # a Monday
OPEN = (7, 21)
SETTINGS = CardTestingSettings()
BUDGET = 0.1  # false card_testing alerts per 1,000 terminal-hours
NORMAL_CODES = (("05", 38), ("51", 30), ("54", 7), ("14", 3), ("61", 6), ("91", 3), ("96", 2))
PROBE_CODES = (("05", 45), ("14", 30), ("54", 25))
COLUMNS = ("time", "device", "site", "acquirer", "card_token", "amount_minor", "method", "mcc",
           "response_code", "approved", "auth_latency_ms", "offline")  # fmt: skip


@dataclass(frozen=True)
class Shop:
    site: str
    terminals: int
    median_minor: int
    sigma: float  # of ln(amount)
    per_hour: float  # payments per terminal in an open hour
    keyed: float  # share keyed in by hand
    acquirer: str = "acq-a"

    @property
    def devices(self) -> list[str]:
        return [f"{self.site}-pos{n}" for n in range(1, self.terminals + 1)]


# keyed-in small payments are common here (phone orders, worn cards): 10 % keyed in
GROCERY = Shop("grocery", 4, 3200, 0.85, 40.0, keyed=0.10)
BISTRO = Shop("bistro", 3, 2500, 0.85, 20.0, keyed=0.02)  # median basket 25.00
COFFEE = Shop("coffee", 2, 350, 0.45, 45.0, keyed=0.10)  # median 3.50: 2.01-4.99 is its trade
RETAIL = Shop("retail", 2, 4800, 0.9, 14.0, keyed=0.05)


@dataclass(frozen=True)
class Probes:
    """Card testing: one probe every ``every_s`` at each of ``devices``, staggered."""

    devices: tuple[str, ...]
    start_ns: int
    end_ns: int
    every_s: float
    amounts: tuple[int, int] = (1, 199)  # minor units, inclusive

    def times(self, device_index: int) -> list[int]:
        step = int(self.every_s * NS_PER_S)
        first = self.start_ns + step * device_index // max(1, len(self.devices))
        return list(range(first, self.end_ns, step))


@dataclass
class Replay:
    findings: list[tuple[int, Finding]] = field(default_factory=list)
    fired: list[Finding] = field(default_factory=list)
    terminal_hours: float = 0.0
    payments: int = 0
    probe_like: int = 0  # payments card testing counted as evidence

    def first_ns(self) -> int | None:
        return min((ts for ts, _ in self.findings), default=None)

    def per_thousand_hours(self) -> float:
        return 1000 * len(self.fired) / self.terminal_hours


def model_of(*shops: Shop) -> TrainedModel:
    terminals = {
        device: models.terminal_baseline(
            shop.site,
            acquirer=shop.acquirer,
            rate_per_hour=[shop.per_hour] * 168,
            amount_log_median=math.log(shop.median_minor),
            amount_log_sigma=shop.sigma,
        )
        for shop in shops
        for device in shop.devices
    }
    fleet = models.usual_baseline(rate_per_hour=[10.0] * 168)
    return models.model_of(terminals, trained_to_ns=DAY_START, fleet=fleet)


class Trade:
    """Rows of normal payments and probes, window by window."""

    def __init__(self, shops: tuple[Shop, ...], probes: tuple[Probes, ...], seed: int) -> None:
        self.shops = shops
        self.rng = random.Random(seed)
        self.regulars = {s.site: [f"reg-{s.site}-{n}" for n in range(300)] for s in shops}
        self.fresh = 0
        self.probe_times = {
            device: (plan, plan.times(i))
            for plan in probes
            for i, device in enumerate(plan.devices)
        }

    def window(self, start_ns: int) -> Table:
        rows: list[tuple[Any, ...]] = []
        hour = (start_ns - DAY_START) % (24 * NS_PER_HOUR) // NS_PER_HOUR
        for shop in self.shops:
            for device in shop.devices:
                if OPEN[0] <= hour < OPEN[1]:
                    rows += self._normal(shop, device, start_ns)
                rows += self._probes(shop, device, start_ns)
        rows.sort(key=lambda row: row[0])
        return Table({name: [row[n] for row in rows] for n, name in enumerate(COLUMNS)})

    def _normal(self, shop: Shop, device: str, start_ns: int) -> list[tuple[Any, ...]]:
        rng = self.rng
        rows = []
        for _ in range(_poisson(rng, shop.per_hour * WINDOW_NS / NS_PER_HOUR)):
            keyed = rng.random() < shop.keyed
            amount = max(1, round(rng.lognormvariate(math.log(shop.median_minor), shop.sigma)))
            declined = rng.random() < (0.14 if keyed else 0.04)
            code = _pick(rng, NORMAL_CODES) if declined else "00"
            card = rng.choice(self.regulars[shop.site]) if rng.random() < 0.33 else self._card()
            ts = start_ns + rng.randrange(WINDOW_NS)
            rows.append(_row(ts, shop, device, card, amount, keyed=keyed, code=code))
        return rows

    def _probes(self, shop: Shop, device: str, start_ns: int) -> list[tuple[Any, ...]]:
        plan, times = self.probe_times.get(device, (None, []))
        if plan is None:
            return []
        rows = []
        for ts in (t for t in times if start_ns <= t < start_ns + WINDOW_NS):
            code = _pick(self.rng, PROBE_CODES) if self.rng.random() < 0.85 else "00"
            amount = self.rng.randint(*plan.amounts)
            rows.append(_row(ts, shop, device, self._card(), amount, keyed=True, code=code))
        return rows

    def _card(self) -> str:
        self.fresh += 1
        return f"card-{self.fresh}"


def _row(
    ts: int, shop: Shop, device: str, card: str, amount: int, *, keyed: bool, code: str
) -> tuple[Any, ...]:
    method = "manual" if keyed else "contactless"
    return (ts, device, shop.site, shop.acquirer, card, amount, method, "5411", code,
            code == "00", 250.0, False)  # fmt: skip


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count, total = count + 1, total + rng.expovariate(1.0)
    return count


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in weighted], [w for _, w in weighted])[0]


def replay(  # noqa: PLR0917
    shops: tuple[Shop, ...],
    model: TrainedModel | None,
    start_ns: int,
    hours: float,
    probes: tuple[Probes, ...] = (),
    seed: int = 1,
) -> Replay:
    trade = Trade(shops, probes, seed)
    memory = Memory()
    alerts = AlertManager(state_path=None)
    result = Replay()
    terminals = sum(shop.terminals for shop in shops)
    for window_start in range(start_ns, start_ns + int(hours * NS_PER_HOUR), WINDOW_NS):
        hour = (window_start - DAY_START) % (24 * NS_PER_HOUR) // NS_PER_HOUR
        result.terminal_hours += terminals * WINDOW_NS / NS_PER_HOUR * (OPEN[0] <= hour < OPEN[1])
        table = trade.window(window_start)
        windows = group_by_terminal(table)
        end = window_start + WINDOW_NS
        found = card_testing(windows, memory, model, {}, window_start, end, SETTINGS)
        result.payments += len(table)
        result.probe_like += sum(count.online for count in found.probes.values())
        result.findings += [(end, f) for f in found.findings]
        fired = alerts.step(end, found.findings)
        by_id = {(f.site, f.device, f.acquirer): f for f in found.findings}
        result.fired += [
            by_id[(a.site, a.device, a.acquirer)] for a in fired if a.status is AlertStatus.FIRING
        ]
    return result


def at(clock: str, day: str = "2026-11-02") -> int:
    return parse_iso(f"{day}T{clock}Z")


def test_a_burst_of_eight_probes_is_raised_in_the_window_it_happens_in() -> None:
    shops = (BISTRO,)
    burst = Probes((BISTRO.devices[0],), at("12:00:00"), at("12:04:00"), every_s=30.0)
    for model in (model_of(BISTRO), None):  # with its baseline, and on the 2.00 fallback
        result = replay(shops, model, at("11:00:00"), 2.0, (burst,))
        assert result.first_ns() == at("12:05:00")
        assert {f.device for _, f in result.findings} == {BISTRO.devices[0]}


def test_slow_testing_on_three_terminals_of_a_site_is_raised_within_the_hour() -> None:
    devices = tuple(GROCERY.devices[:3])
    slow = Probes(devices, at("10:00:00"), at("13:00:00"), every_s=120.0)
    result = replay((GROCERY,), model_of(GROCERY), at("08:00:00"), 6.0, (slow,))
    first = result.first_ns()
    assert first is not None and first - slow.start_ns <= NS_PER_HOUR
    # one alert per probed terminal for the whole incident, none for the untouched one
    assert sorted(f.device or "" for f in result.fired) == list(devices)
    summary = result.fired[0].summary
    assert "site grocery" in summary and all(d in summary for d in devices), summary
    assert "05 x" in summary and "on cards new to the site" in summary, summary


def test_one_slow_terminal_probed_every_ten_minutes_is_raised_within_two_hours() -> None:
    slow = Probes((BISTRO.devices[1],), at("09:00:00"), at("13:00:00"), every_s=600.0)
    result = replay((BISTRO,), model_of(BISTRO), at("08:00:00"), 6.0, (slow,))
    first = result.first_ns()
    assert first is not None and first - slow.start_ns <= 2 * NS_PER_HOUR
    assert {f.device for f in result.fired} == {BISTRO.devices[1]}


def test_probes_of_2_01_to_4_99_where_the_median_basket_is_25_are_raised() -> None:
    assert low_value_limit(model_of(BISTRO), BISTRO.devices[0], "5411", 1000) >= 500
    probes = Probes(
        (BISTRO.devices[0],), at("12:00:00"), at("14:00:00"), every_s=120.0, amounts=(201, 499)
    )
    result = replay((BISTRO,), model_of(BISTRO), at("11:00:00"), 4.0, (probes,))
    first = result.first_ns()
    assert first is not None and first - probes.start_ns <= 2 * WINDOW_NS
    # the fixed 2.00 of the rule before could not see them
    assert replay((BISTRO,), None, at("11:00:00"), 4.0, (probes,)).findings == []


def test_a_spread_over_the_sites_of_an_acquirer_is_raised_on_the_acquirer() -> None:
    shops = tuple(Shop(f"bistro{n:02}", 2, 2500, 0.85, 20.0, keyed=0.02) for n in range(24))
    # one probe every 40 minutes at each site: 36 an hour at the acquirer
    spread = tuple(
        Probes((shop.devices[0],), at("10:00:00") + n * 100 * NS_PER_S, at("13:00:00"), 2400.0)
        for n, shop in enumerate(shops)
    )
    result = replay(shops, model_of(*shops), at("09:00:00"), 5.0, spread)
    raised = [(ts, f) for ts, f in result.findings if f.acquirer == "acq-a"]
    assert raised and raised[0][0] - at("10:00:00") <= NS_PER_HOUR
    assert "spread over acquirer acq-a" in raised[0][1].summary


def test_a_coffee_shop_s_small_keyed_in_trade_is_not_card_testing() -> None:
    limit = low_value_limit(model_of(COFFEE), COFFEE.devices[0], "5411", 1000)
    assert limit < 200  # its 5th percentile: 2.01-4.99 is its ordinary trade
    result = replay((COFFEE,), model_of(COFFEE), DAY_START, 7 * 24.0, seed=3)
    assert result.findings == []


def quiet_weeks(seed: int = 5) -> Replay:
    shops = tuple(
        dataclasses.replace(shop, site=f"{shop.site}{n}", acquirer=f"acq-{n % 3}")
        for shop in (GROCERY, COFFEE, RETAIL, BISTRO)
        for n in range(6)
    )
    return replay(shops, model_of(*shops), DAY_START, 14 * 24.0, seed=seed)


def test_quiet_weeks_with_keyed_in_declines_raise_no_card_testing() -> None:
    result = quiet_weeks()
    assert result.terminal_hours > 10_000  # enough for the budget to mean something
    assert result.per_thousand_hours() <= BUDGET, [f.summary for f in result.fired]
    # the false-alarm bound holds while normal trade looks like probes less than assumed
    assert 0 < result.probe_like / result.payments < SETTINGS.normal_share


def test_sites_keying_in_a_third_of_their_trade_learn_it_and_stay_quiet() -> None:
    # 3 x the keyed-in share assumed: with nothing learned, 5.5 false alerts per 1,000 hours
    shops = tuple(
        dataclasses.replace(GROCERY, site=f"phone-orders{n}", keyed=0.3) for n in range(6)
    )
    result = replay(shops, model_of(*shops), DAY_START, 14 * 24.0, seed=8)
    assert result.probe_like / result.payments > 2 * SETTINGS.normal_share
    assert result.per_thousand_hours() <= BUDGET, [f.summary for f in result.fired]


def test_a_site_that_learned_its_keyed_in_trade_still_catches_slow_testing() -> None:
    shop = dataclasses.replace(GROCERY, keyed=0.3)
    devices = tuple(shop.devices[:3])
    slow = Probes(devices, at("10:00:00", "2026-11-06"), at("13:00:00", "2026-11-06"), 120.0)
    result = replay((shop,), model_of(shop), DAY_START, 5 * 24.0, (slow,))
    first = result.first_ns()
    assert first is not None and 0 <= first - slow.start_ns <= NS_PER_HOUR
    assert sorted(f.device or "" for f in result.fired) == list(devices)


def test_what_card_testing_carries_is_bounded_and_dropped_once_drained() -> None:
    burst = Probes((BISTRO.devices[0],), at("12:00:00"), at("13:00:00"), every_s=5.0)
    trade = Trade((BISTRO,), (burst,), 1)
    memory = Memory()
    for start in range(at("11:00:00"), at("16:00:00"), WINDOW_NS):
        windows = group_by_terminal(trade.window(start))
        card_testing(windows, memory, model_of(BISTRO), {}, start, start + WINDOW_NS, SETTINGS)
        assert all(len(cards) <= SETTINGS.cards_per_site for cards in memory.keyed_cards.values())
        if start == at("12:55:00"):
            assert set(memory.probe_sites) == {BISTRO.site}
    assert memory.probe_sites == {} and memory.probe_acquirers == {}


def test_probes_are_left_out_of_the_approval_drop_test() -> None:
    shops = (BISTRO,)
    model = model_of(BISTRO)
    trade = Trade(shops, (Probes((BISTRO.devices[0],), at("12:00:00"), at("12:30:00"), 20.0),), 1)
    memory = Memory()
    raised: set[str] = set()
    for start in range(at("12:00:00"), at("12:30:00"), WINDOW_NS):
        windows = group_by_terminal(trade.window(start))
        settings = PaymentSettings()
        findings = payment_findings(
            windows, memory, model, set(), start + WINDOW_NS, settings, start_ns=start
        )
        raised |= {f.type for f in findings}
    assert raised == {AlertType.CARD_TESTING}


def main() -> None:
    slow = Probes(tuple(GROCERY.devices[:3]), at("10:00:00"), at("13:00:00"), every_s=120.0)
    one = Probes((BISTRO.devices[1],), at("09:00:00"), at("13:00:00"), every_s=600.0)
    for name, shops, plan in (("3 terminals, 1/2 min each", (GROCERY,), slow),
                              ("1 terminal, 1/10 min", (BISTRO,), one)):  # fmt: skip
        delays = []
        for seed in range(1, 11):
            result = replay(shops, model_of(*shops), at("08:00:00"), 6.0, (plan,), seed=seed)
            first = result.first_ns()
            delays.append(None if first is None else (first - plan.start_ns) / 60e9)
        print(f"slow testing, {name}: delay (min) over 10 seeds {delays}")
    phone_orders = tuple(
        dataclasses.replace(GROCERY, site=f"phone-orders{n}", keyed=0.3) for n in range(6)
    )
    keyed = replay(phone_orders, model_of(*phone_orders), DAY_START, 14 * 24.0, seed=8)
    print(
        f"6 groceries keying in 30 %: {len(keyed.fired)} alerts in {keyed.terminal_hours:.0f} "
        f"terminal-hours; probe-like {1000 * keyed.probe_like / keyed.payments:.2f} per 1,000"
    )
    for seed in (5, 6, 7):
        weeks = quiet_weeks(seed)
        print(
            f"quiet weeks seed {seed}: {len(weeks.fired)} card_testing alerts in "
            f"{weeks.terminal_hours:.0f} terminal-hours = {weeks.per_thousand_hours():.3f} "
            f"per 1,000; probe-like {1000 * weeks.probe_like / weeks.payments:.2f} per 1,000 "
            f"payments (assumed at least {1000 * SETTINGS.normal_share:.1f})"
        )


if __name__ == "__main__":
    main()

"""The injection plan: a scenario resolved against one fleet and one time window.

Built once before the run (deterministically from the seed), it answers what
the device models ask while generating ("is an acquirer outage hitting this
terminal now?"), lists the extra payments that attacks add, the windows in
which devices are cut off, and the ground-truth label of every injection.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from firmware_sim.cards import CardPopulation
from firmware_sim.errors import ScenarioError
from firmware_sim.fleet_layout import DeviceSpec, Fleet
from firmware_sim.scenario_file import InjectionSpec, Scenario
from firmware_sim.targets import resolve
from runtime.logs import kv
from wire.incidents import InjectionType
from wire.labels import GroundTruthLabel, Param, make_label
from wire.messages import PaymentMethod
from wire.timestamps import NS_PER_S

log = logging.getLogger(__name__)

MICRO_AMOUNT_MAX_MINOR: Final = 199  # card testing probes with amounts under 2.00
FLAP_CYCLE_S: Final = (120.0, 480.0)  # one offline/online cycle of a flapping site

MAX_AMOUNT_MINOR: Final = 10**10  # the wire's limit


@dataclass(frozen=True, slots=True)
class Injection:
    """One resolved injection, as the device models see it."""

    kind: InjectionType
    start_ns: int
    end_ns: int
    strength: float

    def covers(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


@dataclass(frozen=True, slots=True)
class InjectedPayment:
    """A payment an attack adds at a terminal (card testing, velocity fraud, outlier)."""

    ts_ns: int
    device: str
    kind: InjectionType
    card_token: str
    amount_minor: int
    method: PaymentMethod


@dataclass(frozen=True, slots=True)
class Expansion:
    """What an injection adds to its label beyond the targets."""

    card_tokens: tuple[str, ...] = ()
    params: tuple[tuple[str, Param], ...] = ()


@dataclass(frozen=True, slots=True)
class OfflineWindow:
    device: str
    start_ns: int
    end_ns: int


class InjectionPlan:
    """Everything a scenario does to one fleet in one run."""

    def __init__(self) -> None:
        self.labels: list[GroundTruthLabel] = []
        self.payments: list[InjectedPayment] = []
        self.offline: list[OfflineWindow] = []
        self._by_device: dict[str, list[Injection]] = defaultdict(list)

    def active(self, device: str, kind: InjectionType, ts_ns: int) -> Injection | None:
        """The injection of ``kind`` hitting ``device`` at ``ts_ns``, if any."""
        for injection in self._by_device.get(device, ()):
            if injection.kind is kind and injection.covers(ts_ns):
                return injection
        return None

    def add(self, devices: tuple[DeviceSpec, ...], injection: Injection) -> None:
        for device in devices:
            self._by_device[device.device_id].append(injection)


def build_plan(
    scenario: Scenario,
    fleet: Fleet,
    cards: CardPopulation,
    start_ns: int,
    end_ns: int,
) -> InjectionPlan:
    """Resolve every injection of ``scenario``; windows are clipped to [start, end),
    and an injection that falls outside the run is left out (and logged).

    Raises ScenarioError naming the injection when it cannot apply to this fleet.
    """
    plan = InjectionPlan()
    rng = random.Random(f"{fleet.seed}:scenario:{scenario.name}")
    for index, spec in enumerate(scenario.injection):
        try:
            resolved = resolve(spec.target_spec(), spec.type, fleet, rng)
        except ValueError as exc:
            raise ScenarioError(f"scenario {scenario.name}: injection[{index}]: {exc}") from None
        window_start = start_ns + spec.start_ns()
        window = (window_start, min(window_start + spec.duration_ns(), end_ns))
        if window[0] >= window[1]:
            log.warning(
                "injection_outside_run",
                extra=kv(scenario=scenario.name, injection=index, type=spec.type.value),
            )
            continue
        injection = Injection(spec.type, window[0], window[1], spec.strength())
        plan.add(resolved.devices, injection)
        extra = _expand(plan, spec, injection, devices=resolved.devices, cards=cards, rng=rng)
        plan.labels.append(
            make_label(
                f"{scenario.name}-{index}",
                spec.type,
                window,
                sites=resolved.sites,
                devices=[d.device_id for d in resolved.devices],
                acquirers=resolved.acquirers,
                card_tokens=extra.card_tokens,
                params={"intensity": injection.strength, **dict(extra.params)},
            )
        )
    plan.payments.sort(key=lambda p: (p.ts_ns, p.device))
    plan.offline.sort(key=lambda w: (w.start_ns, w.device))
    return plan


@dataclass(frozen=True, slots=True)
class _Expanding:
    """One injection being expanded into extra payments and offline windows."""

    plan: InjectionPlan
    injection: Injection
    devices: tuple[DeviceSpec, ...]
    cards: CardPopulation
    rng: random.Random
    count: int | None  # the scenario's ``count``, if given

    def at_random_time(self) -> int:
        start, end = self.injection.start_ns, self.injection.end_ns
        return start + int(self.rng.random() * max(end - start, 1))

    def add_payment(self, device: str, token: str, amount: int, method: PaymentMethod) -> None:
        self.plan.payments.append(
            InjectedPayment(
                self.at_random_time(), device, self.injection.kind, token, amount, method
            )
        )


def _expand(
    plan: InjectionPlan,
    spec: InjectionSpec,
    injection: Injection,
    *,
    devices: tuple[DeviceSpec, ...],
    cards: CardPopulation,
    rng: random.Random,
) -> Expansion:
    """Add the extra payments and offline windows an injection causes; return what
    the label says about them."""
    expand = _EXPANDERS.get(injection.kind)
    if expand is None:
        return Expansion()  # the device models consult the plan while generating
    return expand(_Expanding(plan, injection, devices, cards, rng, spec.count))


def _offline(job: _Expanding) -> Expansion:
    start, end = job.injection.start_ns, job.injection.end_ns
    job.plan.offline.extend(OfflineWindow(d.device_id, start, end) for d in job.devices)
    return Expansion()


def _flap(job: _Expanding) -> Expansion:
    """Offline/online cycles over the window; ``strength`` is the offline share."""
    injection = job.injection
    share = min(max(injection.strength, 0.0), 1.0)
    flaps = 0
    by_site: dict[str, list[DeviceSpec]] = defaultdict(list)
    for device in job.devices:
        by_site[device.site.site_id].append(device)
    for site_devices in by_site.values():
        t = injection.start_ns
        while t < injection.end_ns:
            cycle = int(job.rng.uniform(*FLAP_CYCLE_S) * NS_PER_S)
            down = t + int(cycle * (1.0 - share))
            up = min(t + cycle, injection.end_ns)
            if down < up:
                job.plan.offline.extend(OfflineWindow(d.device_id, down, up) for d in site_devices)
                flaps += 1
            t += cycle
    return Expansion(params=(("flaps", flaps),))


def _card_testing(job: _Expanding) -> Expansion:
    """A burst of micro-amount attempts, each with a different card, at ``strength``
    attempts per minute per terminal (Poisson), keyed in by hand."""
    injection, rng = job.injection, job.rng
    tokens: list[str] = []
    rate_per_ns = max(injection.strength, 0.0) / (60 * NS_PER_S)
    for device in job.devices if rate_per_ns > 0.0 else ():
        t = float(injection.start_ns)
        while (t := t + rng.expovariate(rate_per_ns)) < injection.end_ns:
            token = job.cards.stranger(f"probe:{device.device_id}:{len(tokens)}:{int(t)}")
            tokens.append(token)
            job.plan.payments.append(
                InjectedPayment(
                    int(t),
                    device.device_id,
                    injection.kind,
                    token,
                    rng.randint(1, MICRO_AMOUNT_MAX_MINOR),
                    PaymentMethod.MANUAL,
                )
            )
    return Expansion(tuple(tokens), (("attempts", len(tokens)),))


def _velocity(job: _Expanding) -> Expansion:
    """One stolen card used at every targeted terminal (``strength`` times each)."""
    rng = job.rng
    token = job.cards.stranger(f"velocity:{job.injection.start_ns}:{rng.random()}")
    uses = max(1, round(job.injection.strength)) if job.count is None else job.count
    for device in job.devices:
        for _ in range(uses):
            method = rng.choice((PaymentMethod.CHIP, PaymentMethod.CONTACTLESS))
            job.add_payment(device.device_id, token, rng.randint(15_000, 90_000), method)
    return Expansion((token,), (("uses", uses * len(job.devices)),))


def _outliers(job: _Expanding) -> Expansion:
    """``count`` payments per terminal of ``strength`` times the merchant's median."""
    count = job.count or 1
    for device in job.devices:
        median = device.site.merchant.amount_median_minor
        for number in range(count):
            amount = round(median * job.injection.strength * job.rng.uniform(0.8, 1.25))
            token = job.cards.stranger(
                f"outlier:{device.device_id}:{job.injection.start_ns}:{number}"
            )
            job.add_payment(
                device.device_id, token, min(amount, MAX_AMOUNT_MINOR), PaymentMethod.CHIP
            )
    return Expansion(params=(("outliers", count * len(job.devices)),))


_EXPANDERS: Final[dict[InjectionType, Callable[[_Expanding], Expansion]]] = {
    InjectionType.TERMINAL_OFFLINE: _offline,
    InjectionType.NETWORK_FLAPPING: _flap,
    InjectionType.CARD_TESTING: _card_testing,
    InjectionType.VELOCITY_FRAUD: _velocity,
    InjectionType.AMOUNT_OUTLIER: _outliers,
}

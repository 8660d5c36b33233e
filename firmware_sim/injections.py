"""The injection plan: a scenario resolved against one fleet and one time window.

Built once before the run (deterministically from the seed), it answers what
the device models ask while generating ("is an acquirer outage hitting this
terminal now?"), lists the extra payments that attacks add, the windows in
which devices are cut off, and the ground-truth label of every injection.

Variants, each named in its label's params: card testing may be slow (one
probe every ``every`` per terminal: params ``variant = "slow"``, ``every_s``)
and probe above the usual threshold (2.01-4.99: ``variant =
"above_threshold"``); an acquirer outage with a ``ramp`` degrades
(firmware_sim.degrading: ``ramp_min``); a sensor fault has a ``mode``. An
injection with ``jitter`` starts a random whole number of seconds, never
whole minutes, after its ``start``: off the detectors' 5-minute grid.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from firmware_sim.cards import CardPopulation
from firmware_sim.errors import ScenarioError
from firmware_sim.fleet_layout import DeviceSpec, Fleet
from firmware_sim.scenario_file import CardAmounts, InjectionSpec, Scenario, SensorFaultMode
from firmware_sim.targets import resolve
from runtime.logs import kv
from wire.incidents import InjectionType
from wire.labels import GroundTruthLabel, Param, make_label
from wire.messages import PaymentMethod
from wire.timestamps import NS_PER_S

log = logging.getLogger(__name__)

MICRO_AMOUNT_MAX_MINOR: Final = 199  # card testing probes with amounts under 2.00
ABOVE_THRESHOLD_MINOR: Final = (201, 499)  # probes that keep just over a 2.00 threshold
SLOW_SPACING_JITTER: Final = 0.05  # slow card testing: each gap is every x (1 +- this)
FLAP_CYCLE_S: Final = (120.0, 480.0)  # one offline/online cycle of a flapping site

MAX_AMOUNT_MINOR: Final = 10**10  # the wire's limit


@dataclass(frozen=True, slots=True)
class Injection:
    """One resolved injection, as the device models see it."""

    kind: InjectionType
    start_ns: int
    end_ns: int
    strength: float
    ramp_ns: int = 0  # acquirer_outage: a degrading acquirer (firmware_sim.degrading)
    mode: SensorFaultMode = SensorFaultMode.JUMP  # sensor_fault

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
        window_start = (
            start_ns + spec.start_ns() + _jitter(spec, f"{fleet.seed}:{scenario.name}:{index}")
        )
        window = (window_start, min(window_start + spec.duration_ns(), end_ns))
        if window[0] >= window[1]:
            log.warning(
                "injection_outside_run",
                extra=kv(scenario=scenario.name, injection=index, type=spec.type.value),
            )
            continue
        injection = Injection(
            spec.type, window[0], window[1], spec.strength(), spec.ramp_ns(), spec.mode
        )
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


def _jitter(spec: InjectionSpec, key: str) -> int:
    """A random offset in whole seconds under ``spec.jitter``, never whole minutes, from a
    random stream of the injection's own (the scenario's stream is left as it was)."""
    jitter_s = spec.jitter_ns() // NS_PER_S
    if jitter_s <= 0:
        return 0
    rng = random.Random(f"{key}:jitter")
    return (rng.randrange(max(jitter_s // 60, 1)) * 60 + rng.randint(1, 59)) * NS_PER_S


@dataclass(frozen=True, slots=True)
class _Expanding:
    """One injection being expanded into extra payments and offline windows."""

    plan: InjectionPlan
    injection: Injection
    devices: tuple[DeviceSpec, ...]
    cards: CardPopulation
    rng: random.Random
    spec: InjectionSpec

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
        return _variant(spec)  # the device models consult the plan while generating
    return expand(_Expanding(plan, injection, devices, cards, rng, spec))


def _variant(spec: InjectionSpec) -> Expansion:
    """The params naming a variant that the device models play out."""
    if spec.type is InjectionType.ACQUIRER_OUTAGE and spec.ramp is not None:
        return Expansion(params=(("ramp_min", spec.ramp_ns() / (60 * NS_PER_S)),))
    if spec.type is InjectionType.SENSOR_FAULT:
        return Expansion(params=(("mode", spec.mode.value),))
    return Expansion()


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
    """Attempts keyed in by hand, each with a different card: a burst at ``strength``
    attempts per minute per terminal (Poisson), or slow, one every ``every`` per
    terminal; of micro amounts, or just above the 2.00 threshold."""
    injection, rng = job.injection, job.rng
    above = job.spec.amounts is CardAmounts.ABOVE_THRESHOLD
    low, high = ABOVE_THRESHOLD_MINOR if above else (1, MICRO_AMOUNT_MAX_MINOR)
    every = job.spec.every_ns()
    tokens: list[str] = []
    for device in job.devices:
        for t in _probe_times(job, every):
            token = job.cards.stranger(f"probe:{device.device_id}:{len(tokens)}:{t}")
            tokens.append(token)
            job.plan.payments.append(
                InjectedPayment(
                    t,
                    device.device_id,
                    injection.kind,
                    token,
                    rng.randint(low, high),
                    PaymentMethod.MANUAL,
                )
            )
    params: list[tuple[str, Param]] = [("attempts", len(tokens))]
    variants = (["slow"] if every is not None else []) + (["above_threshold"] if above else [])
    if variants:
        params.append(("variant", "+".join(variants)))
    if every is not None:
        params.append(("every_s", every / NS_PER_S))
    return Expansion(tuple(tokens), tuple(params))


def _probe_times(job: _Expanding, every_ns: int | None) -> Iterator[int]:
    """One terminal's probe times: Poisson at ``strength`` a minute, or one every ``every``.
    A generator, so its draws interleave with the caller's as they always did."""
    injection, rng = job.injection, job.rng
    if every_ns is not None:
        t = injection.start_ns + rng.random() * every_ns
        while t < injection.end_ns:
            yield int(t)
            t += every_ns * rng.uniform(1.0 - SLOW_SPACING_JITTER, 1.0 + SLOW_SPACING_JITTER)
        return
    rate_per_ns = max(injection.strength, 0.0) / (60 * NS_PER_S)
    if rate_per_ns > 0.0:
        t = float(injection.start_ns)
        while (t := t + rng.expovariate(rate_per_ns)) < injection.end_ns:
            yield int(t)


def _velocity(job: _Expanding) -> Expansion:
    """One stolen card used at every targeted terminal (``strength`` times each)."""
    rng = job.rng
    token = job.cards.stranger(f"velocity:{job.injection.start_ns}:{rng.random()}")
    uses = max(1, round(job.injection.strength)) if job.spec.count is None else job.spec.count
    for device in job.devices:
        for _ in range(uses):
            method = rng.choice((PaymentMethod.CHIP, PaymentMethod.CONTACTLESS))
            job.add_payment(device.device_id, token, rng.randint(15_000, 90_000), method)
    return Expansion((token,), (("uses", uses * len(job.devices)),))


def _outliers(job: _Expanding) -> Expansion:
    """``count`` payments per terminal of ``strength`` times the merchant's median."""
    count = job.spec.count or 1
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

"""Putting a run together: fleet, card population, injection plan, context and engine."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from firmware_sim.cards import CardPopulation
from firmware_sim.context import Context, build_context
from firmware_sim.event_engine import Engine, Timing
from firmware_sim.fleet_layout import Fleet, build_fleet
from firmware_sim.injections import InjectionPlan, build_plan
from firmware_sim.scenario_file import Scenario
from wire.calendar import Calendar
from wire.labels import GroundTruthLabel
from wire.timestamps import NS_PER_S

CARDS_PER_TERMINAL: Final = 300
MIN_CARDS: Final = 2_000


@dataclass(frozen=True, slots=True)
class SimSettings:
    terminals: int
    sensors: int
    seed: int
    start_ns: int
    duration_ns: int
    scenario: Scenario = field(default_factory=lambda: Scenario(name="quiet"))
    status_every_s: float = 60.0
    sensor_every_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Simulation:
    settings: SimSettings
    fleet: Fleet
    cards: CardPopulation
    plan: InjectionPlan
    context: Context
    engine: Engine

    @property
    def labels(self) -> list[GroundTruthLabel]:
        return self.plan.labels

    @property
    def calendar(self) -> Calendar:
        """The operator calendar of the days the scenario shapes (sales, closing days)."""
        return self.context.calendar


def card_key(seed: int) -> bytes:
    """The simulated fleet's tokenisation key (a real fleet's lives in its HSM)."""
    return hashlib.sha256(f"tillpulse-sim-card-key:{seed}".encode()).digest()


def build_simulation(settings: SimSettings) -> Simulation:
    """Everything one run needs; raises ScenarioError if the scenario does not fit the fleet."""
    if settings.duration_ns <= 0:
        raise ValueError("the simulated duration must be positive")
    fleet = build_fleet(settings.seed, settings.terminals, settings.sensors)
    cards = CardPopulation(
        settings.seed,
        max(MIN_CARDS, settings.terminals * CARDS_PER_TERMINAL),
        card_key(settings.seed),
    )
    end_ns = settings.start_ns + settings.duration_ns
    plan = build_plan(settings.scenario, fleet, cards, settings.start_ns, end_ns)
    context = build_context(settings.scenario, fleet, settings.start_ns, end_ns)
    timing = Timing(
        start_ns=settings.start_ns,
        end_ns=end_ns,
        status_every_ns=int(settings.status_every_s * NS_PER_S),
        sensor_every_ns=int(settings.sensor_every_s * NS_PER_S),
    )
    engine = Engine(fleet, plan, cards, timing, context)
    return Simulation(settings, fleet, cards, plan, context, engine)

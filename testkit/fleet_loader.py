"""Load a simulated fleet's history straight into a real InfluxDB, for detector tests.

Runs firmware_sim in process (as fast as possible) and writes each event as
the gateway would store it (`wire.points.to_line`), including what the
broker adds (each connection change's `DeviceState`). What the transport
loses is lost here too: a corrupted sample is only sent damaged and never
reaches InfluxDB, while a corrupted payment is re-sent intact. Duplicates
land on the same point. This skips MQTT and the gateway (their own tests
cover them) so a test can load days of a fleet in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from firmware_sim.event_engine import Emission
from firmware_sim.run_setup import SimSettings, build_simulation
from firmware_sim.scenario_file import Scenario, load_scenario
from testkit.servers import InfluxDB1Server
from wire.calendar import Calendar
from wire.labels import GroundTruthLabel
from wire.messages import PaymentTransaction
from wire.points import to_line
from wire.timestamps import NS_PER_S, parse_iso

BATCH_LINES = 20_000


@dataclass(frozen=True)
class LoadedFleet:
    labels: list[GroundTruthLabel]
    terminals: int
    start_ns: int
    end_ns: int
    lines: int
    # the operator calendar of the scenario's sale and closing days (firmware_sim.context)
    calendar: Calendar = field(default_factory=Calendar)


def fleet_lines(
    settings: SimSettings,
) -> tuple[Iterator[str], list[GroundTruthLabel], Calendar]:
    """The run's lines as the gateway would store them, its labels, and the operator
    calendar it writes beside them (sale and closing days: firmware_sim.context)."""
    simulation = build_simulation(settings)

    def lines() -> Iterator[str]:
        for event in simulation.engine.events():
            if isinstance(event, Emission):
                lost = event.corrupt and not isinstance(event.message, PaymentTransaction)
                if not lost:
                    yield to_line(event.message)
            else:
                yield to_line(event.state())

    return lines(), simulation.labels, simulation.calendar


def load_fleet(
    server: InfluxDB1Server,
    database: str,
    *,
    terminals: int,
    start: str,
    hours: float,
    scenario: str | Scenario = "quiet",
    seed: int = 1,
    sensors: int = 0,
) -> LoadedFleet:
    """Simulate ``hours`` from ``start`` (ISO UTC) and write everything into ``database``."""
    start_ns = parse_iso(start)
    duration_ns = int(hours * 3600 * NS_PER_S)
    settings = SimSettings(
        terminals=terminals,
        sensors=sensors,
        seed=seed,
        start_ns=start_ns,
        duration_ns=duration_ns,
        scenario=load_scenario(scenario) if isinstance(scenario, str) else scenario,
    )
    lines, labels, calendar = fleet_lines(settings)
    batch: list[str] = []
    written = 0
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH_LINES:
            server.write(batch, database)
            written += len(batch)
            batch.clear()
    if batch:
        server.write(batch, database)
        written += len(batch)
    return LoadedFleet(labels, terminals, start_ns, start_ns + duration_ns, written, calendar)

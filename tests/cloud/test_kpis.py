"""The payment-KPI detectors (volume, latency, decline codes) against a real influxd.

Two weeks of a quiet fleet train the model (the volume detector judges an hour
of the week once its own days and those of its kind weigh two sightings); then a
quiet day must raise no alert, and a day with faults that move each KPI must raise
each KPI alert on the terminal it hit, and none where another finding is the root
cause.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest

from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.schedule import window_ends
from cloud.jobs.training import train
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from firmware_sim.scenario_file import Scenario
from testkit.fleet_loader import load_fleet
from testkit.servers import InfluxDB1Server
from wire.incidents import AlertType
from wire.messages import Alert, AlertStatus
from wire.timestamps import parse_iso

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINALS = 12  # seed 11: cafe s0000 (2), restaurant s0001 (3), fuel s0002 (4), retail s0003,
SEED = 11  # grocery s0004 (2)
WINDOW_S = 300
HISTORY = ("2026-10-19T00:00:00Z", "2026-11-02T00:00:00Z")  # two weeks from a Monday
QUIET_DAY = "2026-11-02"
FAULT_DAY = "2026-11-03"
KPI_TYPES = {
    AlertType.VOLUME_DROP,
    AlertType.VOLUME_SURGE,
    AlertType.LATENCY_SPIKE,
    AlertType.DECLINE_MIX,
}

SLOW_LINK = "s0004-pos1"  # its route to the acquirer is slow and fails with 91/96
BURST = "s0002-pos1"  # a stolen card used 40 times in 10 minutes
CUT_OFF = "s0000-pos1"  # offline for an hour: terminal_offline, not a volume drop
PROBED = "s0004-pos2"  # card testing: card_testing, not a surge or a decline-code shift
DEAD_READER = "s0000-pos2"  # heartbeats go on, no payment for two hours (deleted below)
FAULTS = f"""
name = "kpi-faults"

[[injection]]
type = "acquirer_outage"
start = "11h"
duration = "2h"
targets = {{ devices = ["{SLOW_LINK}"] }}
intensity = 0.4

[[injection]]
type = "velocity_fraud"
start = "12h"
duration = "10m"
targets = {{ devices = ["{BURST}"] }}
intensity = 40

[[injection]]
type = "terminal_offline"
start = "9h"
duration = "1h"
targets = {{ devices = ["{CUT_OFF}"] }}

[[injection]]
type = "card_testing"
start = "10h"
duration = "15m"
targets = {{ devices = ["{PROBED}"] }}
intensity = 30
"""


@dataclass
class Fleet:
    server: InfluxDB1Server
    database: str
    reader: InfluxQLReader
    model: TrainedModel

    def replay(self, day: str, start: str, end: str) -> list[Alert]:
        """Detect window by window over ``[day start, day end)``; the firing alerts."""
        detection = Detection(self.reader, self.model, DetectionSettings(window_s=WINDOW_S))
        alerts: list[Alert] = []
        first, last = parse_iso(f"{day}T{start}Z"), parse_iso(f"{day}T{end}Z")
        for window_end in window_ends(first, last, detection.window_ns):
            alerts += detection.run(window_end).alerts
        return [a for a in alerts if a.status is AlertStatus.FIRING]


@pytest.fixture(scope="module")
def fleet(influxdb_session: InfluxDB1Server) -> Iterator[Fleet]:
    database = f"kpis_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(database)
    # the history and the quiet day; it ends (the terminals shut down) an hour before
    # the fault day starts (they come up), as two runs of a fleet would
    load_fleet(
        influxdb_session, database, terminals=TERMINALS, start=HISTORY[0], hours=15 * 24 - 1,
        seed=SEED,
    )  # fmt: skip
    faults = msgspec.toml.decode(FAULTS, type=Scenario)
    load_fleet(
        influxdb_session, database, terminals=TERMINALS, start=f"{FAULT_DAY}T00:00:00Z",
        hours=14, scenario=faults, seed=SEED,
    )  # fmt: skip
    # a broken card reader: the terminal stays online, its payments stop
    dead = (parse_iso(f"{FAULT_DAY}T08:00:00Z"), parse_iso(f"{FAULT_DAY}T10:00:00Z"))
    influxdb_session.query(
        f"DELETE FROM payment WHERE device = '{DEAD_READER}' "
        f"AND time >= {dead[0]} AND time < {dead[1]}",
        db=database,
    )
    reader = InfluxQLReader(ReaderSettings(url=influxdb_session.url, database=database))
    model = train(
        reader, parse_iso(HISTORY[0]), parse_iso(HISTORY[1]), window_s=WINDOW_S,
        fraud_hours=12,  # the fraud model is not under test here: a short fit is enough
    )  # fmt: skip
    yield Fleet(influxdb_session, database, reader, model)
    reader.close()


@pytest.fixture(scope="module")
def fault_day(fleet: Fleet) -> list[Alert]:
    return fleet.replay(FAULT_DAY, "07:30:00", "13:30:00")


def devices_with(alerts: list[Alert], kind: AlertType) -> set[str | None]:
    return {a.device for a in alerts if a.type == kind}


def test_a_quiet_day_raises_no_kpi_alert_from_opening_to_closing(fleet: Fleet) -> None:
    alerts = fleet.replay(QUIET_DAY, "05:00:00", "23:00:00")
    assert [a.summary for a in alerts if a.type in KPI_TYPES] == []


def test_a_slow_route_to_the_acquirer_is_a_latency_spike_of_that_terminal(
    fault_day: list[Alert],
) -> None:
    assert devices_with(fault_day, AlertType.LATENCY_SPIKE) == {SLOW_LINK}
    spike = next(a for a in fault_day if a.type == AlertType.LATENCY_SPIKE)
    assert parse_iso(f"{FAULT_DAY}T11:00:00Z") <= spike.ts <= parse_iso(f"{FAULT_DAY}T11:30:00Z")
    assert "x its usual" in spike.summary, spike.summary


def test_its_failures_shift_the_decline_codes_and_the_alert_names_the_code(
    fault_day: list[Alert],
) -> None:
    assert devices_with(fault_day, AlertType.DECLINE_MIX) == {SLOW_LINK}
    shift = next(a for a in fault_day if a.type == AlertType.DECLINE_MIX)
    assert "code 91" in shift.summary or "code 96" in shift.summary, shift.summary


def test_a_burst_of_payments_is_a_volume_surge(fault_day: list[Alert]) -> None:
    assert devices_with(fault_day, AlertType.VOLUME_SURGE) == {BURST}
    surge = next(a for a in fault_day if a.type == AlertType.VOLUME_SURGE)
    assert "hour-of-week baseline over 14 days" in surge.summary, surge.summary


def test_a_terminal_that_stops_taking_payments_is_a_volume_drop(fault_day: list[Alert]) -> None:
    assert devices_with(fault_day, AlertType.VOLUME_DROP) == {DEAD_READER}
    drop = next(a for a in fault_day if a.type == AlertType.VOLUME_DROP)
    assert parse_iso(f"{FAULT_DAY}T08:00:00Z") < drop.ts <= parse_iso(f"{FAULT_DAY}T09:00:00Z")
    assert "too few payments" in drop.summary, drop.summary


def test_the_root_cause_is_alerted_and_not_its_kpi_symptoms(fault_day: list[Alert]) -> None:
    # offline: its payments stop, but terminal_offline says why (no volume drop above)
    assert CUT_OFF in devices_with(fault_day, AlertType.TERMINAL_OFFLINE)
    # card testing: a burst of declined payments, but card_testing says why
    assert PROBED in devices_with(fault_day, AlertType.CARD_TESTING)
    kpi_devices = {a.device for a in fault_day if a.type in KPI_TYPES}
    assert kpi_devices.isdisjoint({CUT_OFF, PROBED})

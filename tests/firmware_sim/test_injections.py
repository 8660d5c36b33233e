"""Every injection shows up in the events it should, and only there, and in the labels."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import pytest

from firmware_sim.event_engine import Emission, SimEvent
from firmware_sim.run_setup import Simulation
from tests.firmware_sim.helpers import identity, link_changes, messages, scenario_from, simulate
from wire.incidents import InjectionType
from wire.labels import GroundTruthLabel, read_labels, write_labels
from wire.messages import (
    PaymentTransaction,
    SensorReading,
    StateReason,
    TerminalStatus,
    decode,
    encode,
)
from wire.timestamps import iso
from wire.topics import validate_id

SCENARIO = """
name = "all"
[[injection]]
type = "terminal_offline"
start = "9h"
duration = "30m"
targets = { sites = ["s0001"], random = 1 }
[[injection]]
type = "network_flapping"
start = "10h"
duration = "1h"
targets = { sites = ["s0002"] }
intensity = 0.5
[[injection]]
type = "acquirer_outage"
start = "12h"
duration = "30m"
targets = { acquirers = ["acq-a"] }
intensity = 0.9
[[injection]]
type = "decline_spike"
start = "13h"
duration = "1h"
targets = "random 3"
intensity = 0.5
[[injection]]
type = "card_testing"
start = "14h"
duration = "15m"
intensity = 30
[[injection]]
type = "velocity_fraud"
start = "15h"
duration = "10m"
targets = "random 5"
[[injection]]
type = "amount_outlier"
start = "10h"
duration = "6h"
targets = "random 2"
count = 2
[[injection]]
type = "tamper"
start = "16h"
duration = "1h"
[[injection]]
type = "overheating"
start = "13h"
duration = "2h"
targets = "random 3"
[[injection]]
type = "paper_out"
start = "11h"
duration = "1h"
[[injection]]
type = "clock_skew"
start = "17h"
duration = "1h"
targets = { sites = ["s0003"] }
intensity = -600
[[injection]]
type = "duplicate_sends"
start = "18h"
duration = "1h"
targets = "random 3"
intensity = 0.5
[[injection]]
type = "corrupt_frames"
start = "19h"
duration = "1h"
targets = "random 3"
intensity = 0.5
[[injection]]
type = "sensor_fault"
start = "20h"
duration = "1h"
targets = "random 1"
mode = "stuck"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, list[SimEvent]]:
    scenario = scenario_from(tmp_path_factory.mktemp("scenario"), SCENARIO)
    return simulate(terminals=40, sensors=10, scenario=scenario, status_every_s=120)


def label(simulation: Simulation, kind: InjectionType) -> GroundTruthLabel:
    (found,) = [lb for lb in simulation.labels if lb.type is kind]
    return found


def hit(events: list[SimEvent], lb: GroundTruthLabel) -> list[Emission]:
    """The emissions of the label's devices inside its window."""
    devices = set(lb.devices)
    return [
        e
        for e in events
        if isinstance(e, Emission) and e.message.device in devices and lb.covers(e.at_ns)
    ]


def test_labels_name_concrete_targets_and_round_trip(
    run: tuple[Simulation, list[SimEvent]], tmp_path: Path
) -> None:
    simulation, _ = run
    assert [lb.type for lb in simulation.labels] == list(InjectionType)
    for lb in simulation.labels:
        assert lb.devices and lb.sites
        for name in (*lb.devices, *lb.sites, *lb.acquirers):
            validate_id(name)
        assert (lb.start, lb.end) == (iso(lb.start_ns), iso(lb.end_ns))
        assert lb.end_ns > lb.start_ns
    path = tmp_path / "labels.jsonl"
    assert write_labels(path, simulation.labels) == len(InjectionType)
    assert read_labels(path) == simulation.labels


def test_acquirer_outage_declines_91_96_and_is_slow(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.ACQUIRER_OUTAGE)
    assert lb.acquirers == ["acq-a"]
    terminals = {
        d.device_id for d in simulation.fleet.terminals if d.site.acquirer.acquirer_id == "acq-a"
    }
    assert set(lb.devices) == terminals
    paid = [
        m for m in messages(events) if isinstance(m, PaymentTransaction) and m.acquirer == "acq-a"
    ]
    inside = [p for p in paid if lb.covers(p.ts)]
    outside = [p for p in paid if not lb.covers(p.ts)]
    assert len(inside) > 30
    share = sum(p.response_code in ("91", "96") for p in inside) / len(inside)
    assert share > 0.75
    assert sum(p.response_code in ("91", "96") for p in outside) / len(outside) < 0.05
    slow = statistics.median(p.auth_latency_ms for p in inside)
    assert slow > 10 * statistics.median(p.auth_latency_ms for p in outside)


def test_card_testing_is_micro_amounts_over_fresh_cards(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.CARD_TESTING)
    tokens = set(lb.card_tokens)
    probes = [
        e.message
        for e in hit(events, lb)
        if isinstance(e.message, PaymentTransaction) and e.message.card_token in tokens
    ]
    assert len(probes) == lb.params["attempts"] == len(tokens) > 100
    assert all(p.amount_minor <= 199 and p.method == "manual" for p in probes)
    assert 0.7 < sum(not p.approved for p in probes) / len(probes) < 0.97


def test_velocity_fraud_uses_one_card_at_many_terminals(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.VELOCITY_FRAUD)
    (token,) = lb.card_tokens
    uses = [
        m for m in messages(events) if isinstance(m, PaymentTransaction) and m.card_token == token
    ]
    assert {u.device for u in uses} == set(lb.devices) and len(lb.devices) == 5
    assert len({u.site for u in uses}) >= 2
    assert all(lb.covers(u.ts) for u in uses)


def test_amount_outliers_and_decline_spike(run: tuple[Simulation, list[SimEvent]]) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.AMOUNT_OUTLIER)
    median = {d.device_id: d.site.merchant.amount_median_minor for d in simulation.fleet.devices}
    big = [
        e.message
        for e in hit(events, lb)
        if isinstance(e.message, PaymentTransaction)
        and e.message.amount_minor > 25 * median[e.message.device]
    ]
    assert len(big) == lb.params["outliers"] == 4
    spike = label(simulation, InjectionType.DECLINE_SPIKE)
    paid = [e.message for e in hit(events, spike) if isinstance(e.message, PaymentTransaction)]
    assert len(paid) > 20
    assert sum(not p.approved for p in paid) / len(paid) > 0.35


def test_terminal_state_injections(run: tuple[Simulation, list[SimEvent]]) -> None:
    simulation, events = run
    statuses = [m for m in messages(events) if isinstance(m, TerminalStatus)]
    tamper = label(simulation, InjectionType.TAMPER)
    paper = label(simulation, InjectionType.PAPER_OUT)
    for status in statuses:
        if status.device in tamper.devices:
            assert status.tamper == tamper.covers(status.ts)
        else:
            assert not status.tamper
        if status.device in paper.devices and paper.covers(status.ts):
            assert status.paper_pct == 0.0
    heat = label(simulation, InjectionType.OVERHEATING)
    for device in heat.devices:
        temps = [
            (m.ts, m.temperature_c)
            for m in messages(events)
            if isinstance(m, TerminalStatus | SensorReading) and m.device == device
        ]
        normal = max(t for ts, t in temps if not heat.covers(ts))
        late = [
            t
            for ts, t in temps
            if heat.start_ns + (heat.end_ns - heat.start_ns) // 2 <= ts and heat.covers(ts)
        ]
        assert late and min(late) > normal + 20


def test_clock_skew_duplicates_and_corruption_hit_only_their_targets(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = run
    skew = label(simulation, InjectionType.CLOCK_SKEW)
    emissions = [e for e in events if isinstance(e, Emission)]
    for emission in emissions:
        offset = emission.message.ts - emission.at_ns
        skewed = emission.message.device in skew.devices and skew.covers(emission.at_ns)
        if isinstance(emission.message, TerminalStatus | SensorReading):
            assert offset == (-600 * 10**9 if skewed else 0)
    dup, bad = (
        label(simulation, InjectionType.DUPLICATE_SENDS),
        label(simulation, InjectionType.CORRUPT_FRAMES),
    )
    duplicates = [e for e in emissions if e.duplicate]
    corrupted = [e for e in emissions if e.corrupt]
    assert duplicates and corrupted
    assert all(e.message.device in dup.devices and dup.covers(e.at_ns) for e in duplicates)
    assert all(e.message.device in bad.devices and bad.covers(e.at_ns) for e in corrupted)
    seen = Counter(identity(e.message) for e in emissions)  # (device, stream, seq)
    assert sum(n - 1 for n in seen.values()) == len(duplicates)


def test_offline_terminal_stores_and_forwards(run: tuple[Simulation, list[SimEvent]]) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.TERMINAL_OFFLINE)
    (device,) = lb.devices
    changes = [c for c in link_changes(events) if c.device == device]
    assert [(c.reason, c.at_ns) for c in changes[1:3]] == [
        (StateReason.LAST_WILL, lb.start_ns),
        (StateReason.CONNECTED, lb.end_ns),
    ]
    mine = [e for e in events if isinstance(e, Emission) and e.message.device == device]
    assert not [e for e in mine if lb.covers(e.at_ns)]
    stored = [
        (e.at_ns, e.message)
        for e in mine
        if isinstance(e.message, PaymentTransaction) and lb.covers(e.message.ts)
    ]
    assert all(p.offline and at_ns == lb.end_ns for at_ns, p in stored)
    assert all(p.response_code in ("Y1", "Z1") for _, p in stored)


def test_network_flapping_cuts_a_whole_site_repeatedly(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = run
    lb = label(simulation, InjectionType.NETWORK_FLAPPING)
    assert lb.sites == ["s0002"]
    assert set(lb.devices) == {
        d.device_id for d in simulation.fleet.devices if d.site.site_id == "s0002"
    }
    wills = Counter(
        c.device
        for c in link_changes(events)
        if c.reason is StateReason.LAST_WILL and lb.covers(c.at_ns)
    )
    assert set(wills) == set(lb.devices)
    flaps = lb.params["flaps"]
    assert isinstance(flaps, int) and flaps >= 5
    assert set(wills.values()) == {flaps}


def test_a_quiet_run_has_no_trace_of_injections() -> None:
    simulation, events = simulate(terminals=10, sensors=2, hours=24)
    assert simulation.labels == []
    emissions = [e for e in events if isinstance(e, Emission)]
    assert not any(e.duplicate or e.corrupt for e in emissions)
    assert {c.reason for c in link_changes(events)} == {StateReason.CONNECTED, StateReason.SHUTDOWN}


def test_every_event_of_every_injection_round_trips_the_wire(
    run: tuple[Simulation, list[SimEvent]],
) -> None:
    _, events = run
    for event in events:
        message = event.message if isinstance(event, Emission) else event.state()
        assert decode(encode(message)) == message


def test_an_injection_outside_the_run_is_left_out(tmp_path: Path) -> None:
    scenario = scenario_from(
        tmp_path,
        'name = "late"\n[[injection]]\ntype = "terminal_offline"\nstart = "9h"\n'
        'duration = "30m"\n[[injection]]\ntype = "tamper"\nstart = "5h"\nduration = "3h"\n',
    )
    simulation, events = simulate(terminals=5, sensors=1, hours=6, scenario=scenario)
    (tamper,) = simulation.labels  # the offline window would start after the end
    assert tamper.type is InjectionType.TAMPER
    assert tamper.end_ns - tamper.start_ns == 3600 * 10**9  # clipped to the run
    assert StateReason.LAST_WILL not in {c.reason for c in link_changes(events)}

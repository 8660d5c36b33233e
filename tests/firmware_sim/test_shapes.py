"""Real-world shapes of traffic: each appears in the events as the scenario asks.

Context shapes (overdispersion, calendar days, hour changes, Wi-Fi flaps,
power-on races) carry no label; incident variants (slow and above-threshold
card testing, a degrading acquirer, short outages off the grid, sensor
faults) keep their injection type and name the variant in the label's params.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from firmware_sim.cli import main
from firmware_sim.errors import ScenarioError
from firmware_sim.event_engine import LinkChange, SimEvent
from firmware_sim.fleet_layout import build_fleet
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from firmware_sim.run_setup import SimSettings, Simulation
from firmware_sim.scenario_file import Scenario, Traffic, load_scenario
from testkit.fleet_loader import fleet_lines
from testkit.servers import MosquittoServer
from tests.firmware_sim.helpers import (
    START_NS,
    Shape,
    build,
    link_changes,
    messages,
    scenario_from,
    simulate,
)
from tests.firmware_sim.test_mqtt_fleet import Subscriber
from wire.calendar import DayKind, load_calendar
from wire.incidents import InjectionType
from wire.labels import GroundTruthLabel
from wire.messages import (
    DeviceState,
    PaymentTransaction,
    SensorReading,
    StateReason,
    TerminalStatus,
    decode_as,
)
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S

GROCERY = "5411"


def payments(events: list[SimEvent]) -> list[PaymentTransaction]:
    return [m for m in messages(events) if isinstance(m, PaymentTransaction)]


def on_day(ts_ns: int) -> int:
    return (ts_ns - START_NS) // NS_PER_DAY


def only_label(simulation: Simulation) -> GroundTruthLabel:
    (label,) = simulation.labels
    return label


# -- overdispersion ---------------------------------------------------------------------


def hourly_variance_over_mean(dispersion: float) -> float:
    """Variance / mean of terminals' hourly counts, among terminals of one merchant type
    in one hour (one expected count), averaged over the busy (type, hour) groups."""
    scenario = Scenario(name="d", traffic=Traffic(dispersion=dispersion))
    simulation, events = simulate(terminals=150, sensors=0, scenario=scenario)
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for payment in payments(events):
        counts[payment.device, (payment.ts - START_NS) // NS_PER_HOUR] += 1
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for terminal in simulation.fleet.terminals:
        for hour in range(24):
            groups[terminal.site.merchant.kind, hour].append(counts[terminal.device_id, hour])
    ratios = [
        statistics.variance(group) / statistics.fmean(group)
        for group in groups.values()
        if len(group) >= 10 and statistics.fmean(group) >= 2.0
    ]
    assert len(ratios) >= 40, "too few busy hours to judge"
    return statistics.fmean(ratios)


def test_the_dispersion_knob_sets_the_variance_of_hourly_counts() -> None:
    assert 2.4 <= hourly_variance_over_mean(3.0) <= 3.6
    assert 0.8 <= hourly_variance_over_mean(1.0) <= 1.25  # 1: Poisson


# -- calendar days ----------------------------------------------------------------------


def test_a_sale_day_has_two_to_four_times_the_payments_of_the_same_weekday(
    tmp_path: Path,
) -> None:
    scenario = scenario_from(
        tmp_path,
        f'name = "s"\n[[day]]\nkind = "sale"\nday = 7\nmccs = ["{GROCERY}"]\nfactor = 3.0\n',
    )
    simulation, events = simulate(terminals=30, sensors=0, hours=8 * 24, scenario=scenario)
    by_day: dict[tuple[bool, int], int] = defaultdict(int)
    for payment in payments(events):
        by_day[payment.mcc == GROCERY, on_day(payment.ts)] += 1
    assert by_day[True, 0] > 500, "too little grocery traffic to judge"
    assert 2.0 <= by_day[True, 7] / by_day[True, 0] <= 4.0  # both Mondays
    assert 0.75 <= by_day[False, 7] / by_day[False, 0] <= 1.33  # the others trade as usual
    assert simulation.labels == []  # context, not an incident


def test_a_closed_site_takes_no_payments_and_its_terminals_are_off_for_the_day(
    tmp_path: Path,
) -> None:
    toml = 'name = "c"\n[[day]]\nkind = "closed"\nday = 1\nrandom = 1\nterminals = "off"\n'
    simulation, events = simulate(
        terminals=30, sensors=0, hours=72, scenario=scenario_from(tmp_path, toml)
    )
    (entry,) = simulation.calendar.day
    (site,) = entry.sites
    terminals = {d.device_id for d in simulation.fleet.terminals if d.site.site_id == site}
    days = {on_day(p.ts) for p in payments(events) if p.site == site}
    assert days == {0, 2}
    for device in terminals:
        changes = [c for c in link_changes(events) if c.device == device]
        reasons = [c.reason for c in changes]
        on, off = StateReason.CONNECTED, StateReason.SHUTDOWN
        assert reasons == [on, off, on, off]  # the last: the run's end
        assert on_day(changes[1].at_ns) == 1 and on_day(changes[2].at_ns) == 2
        heartbeats = [m for m in messages(events) if isinstance(m, TerminalStatus)]
        mine = [h for h in heartbeats if h.device == device]
        assert not [h for h in mine if changes[1].at_ns <= h.ts < changes[2].at_ns]
        first = next(h for h in mine if h.ts >= changes[2].at_ns)
        # the power-on race: online first, the first heartbeat a few seconds later
        assert 2 * NS_PER_S <= first.ts - changes[2].at_ns <= 8 * NS_PER_S
        assert first.uptime_s <= 8  # it booted
        assert [h.seq for h in mine] == list(range(1, len(mine) + 1))  # seq kept across boots
    assert simulation.labels == []


def test_a_closed_site_left_idle_keeps_its_heartbeats(tmp_path: Path) -> None:
    toml = 'name = "c"\n[[day]]\nkind = "closed"\nday = 0\nrandom = 1\n'
    simulation, events = simulate(
        terminals=30, sensors=0, hours=24, scenario=scenario_from(tmp_path, toml)
    )
    (site,) = simulation.calendar.day[0].sites
    assert not [p for p in payments(events) if p.site == site]
    heartbeats = [m for m in messages(events) if isinstance(m, TerminalStatus) and m.site == site]
    terminals = [d for d in simulation.fleet.terminals if d.site.site_id == site]
    assert len(heartbeats) == len(terminals) * 24 * 3600 // 300  # every 300 s, all day
    assert not [
        c
        for c in link_changes(events)
        if c.site == site and c.at_ns != START_NS and c.at_ns != START_NS + NS_PER_DAY
    ]


def test_of_two_days_at_one_site_the_first_listed_applies(tmp_path: Path) -> None:
    toml = """
name = "both"
[[day]]
kind = "sale"
day = 0
sites = ["s0001"]
[[day]]
kind = "closed"
day = 0
terminals = "off"
"""
    simulation, events = simulate(
        terminals=30, sensors=0, hours=24, scenario=scenario_from(tmp_path, toml)
    )
    switched_off = {cycle.device.split("-")[0] for cycle in simulation.context.power}
    assert switched_off == {site.site_id for site in simulation.fleet.sites} - {"s0001"}
    assert [p for p in payments(events) if p.site == "s0001"]  # on sale, not closed
    assert {p.site for p in payments(events)} == {"s0001"}  # every other site closed
    (entry,) = [d for d in simulation.calendar.day if d.kind is DayKind.SALE]
    assert simulation.calendar.on("s0001", "", START_NS) == entry


def test_the_calendar_file_round_trips_and_names_the_sale_and_the_closing_day(
    tmp_path: Path,
) -> None:
    labels = tmp_path / "labels.jsonl"
    argv = ["fleet", "--terminals", "40", "--sensors", "4", "--duration", "3d", "--accel", "0"]
    argv += ["--start", "2026-11-23T00:00:00Z", "--scenario", "realistic", "--quiet"]
    argv += ["--out", str(tmp_path / "events.jsonl"), "--labels", str(labels)]
    assert main(argv) == 0
    calendar = load_calendar(tmp_path / "calendar.toml")
    assert [(d.kind, [str(x) for x in d.dates]) for d in calendar.day] == [
        (DayKind.CLOSED, ["2026-11-24"]),
        (DayKind.SALE, ["2026-11-24"]),
    ]
    closed, sale = calendar.day
    assert sale.mccs == ["5651"] and sale.name == "Winter sale"
    assert len(closed.sites) == 1 and closed.name == "Stocktake"
    # a scenario without calendar days writes no calendar
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    argv = ["fleet", "--terminals", "5", "--duration", "1h", "--accel", "0", "--quiet"]
    argv += ["--out", str(quiet / "e.jsonl"), "--labels", str(quiet / "labels.jsonl")]
    assert main(argv) == 0
    assert not (quiet / "calendar.toml").exists()
    # unless asked for by name: then an empty one
    assert main([*argv, "--calendar", str(quiet / "empty.toml")]) == 0
    assert load_calendar(quiet / "empty.toml").day == []


def test_the_fleet_loader_carries_the_calendar() -> None:
    settings = SimSettings(
        terminals=20,
        sensors=2,
        seed=3,
        start_ns=START_NS,
        duration_ns=NS_PER_DAY,
        scenario=load_scenario("realistic"),
    )
    _, _, calendar = fleet_lines(settings)  # what load_fleet hands a test with the data
    assert [d.kind for d in calendar.day] == [DayKind.CLOSED, DayKind.SALE]


# -- hour changes -----------------------------------------------------------------------


def test_an_hour_change_moves_the_opening_from_its_day_on(tmp_path: Path) -> None:
    toml = f'name = "h"\n[[hours]]\nfrom_day = 1\nmccs = ["{GROCERY}"]\nopen = 10\n'
    simulation, events = simulate(
        terminals=30, sensors=0, hours=48, scenario=scenario_from(tmp_path, toml)
    )
    hours = defaultdict(set)
    for payment in payments(events):
        if payment.mcc == GROCERY:
            hours[on_day(payment.ts)].add((payment.ts - START_NS) % NS_PER_DAY // NS_PER_HOUR)
    assert min(hours[0]) == 7 and min(hours[1]) == 10
    assert max(hours[1]) == 21  # the closing hour is unchanged
    assert simulation.labels == []


def test_a_calendar_or_hours_entry_that_does_not_fit_the_fleet_is_a_clear_error(
    tmp_path: Path,
) -> None:
    bad = scenario_from(
        tmp_path, 'name = "b"\n[[day]]\nkind = "sale"\nday = 0\nsites = ["s9999"]\n'
    )
    with pytest.raises(ScenarioError, match=r"day\[0\]: no site s9999"):
        simulate(terminals=5, scenario=bad)
    bad = scenario_from(tmp_path, 'name = "b"\n[[hours]]\nfrom_day = 0\nopen = 12\nclose = 9\n')
    with pytest.raises(ScenarioError, match=r"hours\[0\]: open must be before close"):
        simulate(terminals=5, scenario=bad)


# -- card testing variants --------------------------------------------------------------


def test_slow_card_testing_probes_at_the_configured_spacing_across_a_sites_terminals(
    tmp_path: Path,
) -> None:
    fleet = build_fleet(1, 30, 0)
    shared = sorted({d.site.site_id for d in fleet.terminals if d.device_id.endswith("-pos2")})
    toml = f"""
name = "slow"
[[injection]]
type = "card_testing"
start = "10h"
duration = "4h"
every = "6m"
targets = {{ sites = {shared!r}, random_sites = 1 }}
""".replace("'", '"')
    simulation, events = simulate(terminals=30, sensors=0, scenario=scenario_from(tmp_path, toml))
    label = only_label(simulation)
    assert label.type is InjectionType.CARD_TESTING
    assert label.params["variant"] == "slow" and label.params["every_s"] == 360.0
    (site,) = label.sites
    assert set(label.devices) == {d.device_id for d in fleet.terminals if d.site.site_id == site}
    assert len(label.devices) >= 2
    probes = [p for p in payments(events) if p.card_token in set(label.card_tokens)]
    assert len(probes) == label.params["attempts"]
    for device in label.devices:
        times = sorted(p.ts for p in probes if p.device == device)
        assert 38 <= len(times) <= 42  # 4 h / 6 min
        gaps = [(b - a) / NS_PER_S for a, b in itertools.pairwise(times)]
        assert all(342 <= gap <= 378 for gap in gaps), gaps  # 360 s +- 5 %
    assert all(p.amount_minor < 200 for p in probes)


def test_above_threshold_card_testing_probes_between_2_01_and_4_99(tmp_path: Path) -> None:
    toml = """
name = "above"
[[injection]]
type = "card_testing"
start = "14h"
duration = "15m"
intensity = 20
amounts = "above_threshold"
"""
    simulation, events = simulate(terminals=10, sensors=0, scenario=scenario_from(tmp_path, toml))
    label = only_label(simulation)
    assert label.params["variant"] == "above_threshold"
    probes = [p for p in payments(events) if p.card_token in set(label.card_tokens)]
    assert len(probes) > 100
    assert all(201 <= p.amount_minor <= 499 for p in probes)


# -- a degrading acquirer ---------------------------------------------------------------


def test_a_degrading_acquirer_slows_over_the_ramp_then_fails_more_and_more(
    tmp_path: Path,
) -> None:
    toml = """
name = "degrading"
[[injection]]
type = "acquirer_outage"
start = "11h"
duration = "2h"
ramp = "40m"
targets = { acquirers = ["acq-a"] }
"""
    simulation, events = simulate(terminals=80, sensors=0, scenario=scenario_from(tmp_path, toml))
    label = only_label(simulation)
    start = START_NS + 11 * NS_PER_HOUR
    assert label.type is InjectionType.ACQUIRER_OUTAGE and label.start_ns == start
    assert label.params["ramp_min"] == 40.0
    hit = [p for p in payments(events) if p.acquirer == "acq-a" and not p.offline]

    def during(first_min: float, last_min: float) -> list[PaymentTransaction]:
        low, high = start + first_min * 60 * NS_PER_S, start + last_min * 60 * NS_PER_S
        return [p for p in hit if low <= p.ts < high]

    def failing(minutes: tuple[float, float]) -> float:
        window = during(*minutes)
        assert len(window) > 80, "too few payments to judge"
        return sum(p.response_code in {"91", "96"} for p in window) / len(window)

    before = statistics.median(p.auth_latency_ms for p in during(-30, 0))
    early = statistics.median(p.auth_latency_ms for p in during(0, 10))
    late = statistics.median(p.auth_latency_ms for p in during(30, 40))
    after = statistics.median(p.auth_latency_ms for p in during(40, 120))
    assert early < 1.6 * before  # it creeps
    assert 3.5 * before <= late <= 5.5 * before
    assert 4.0 * before <= after <= 6.0 * before  # held at x5
    assert failing((0, 40)) < 0.02  # no failures while it only slows
    assert failing((40, 60)) < 0.2  # from 5 % ...
    assert 0.3 <= failing((100, 120)) <= 0.5  # ... to 40 %


# -- flaps, short outages, power-on -----------------------------------------------------


def test_wifi_flaps_are_a_few_seconds_a_few_times_a_day_and_unlabelled(
    tmp_path: Path,
) -> None:
    scenario = Scenario(name="f", traffic=Traffic(flaps_per_day=3.0))
    simulation, events = simulate(terminals=20, sensors=2, hours=48, scenario=scenario)
    assert simulation.labels == []
    drops = [c for c in link_changes(events) if c.reason is StateReason.LAST_WILL]
    assert 2.0 <= len(drops) / 20 / 2 <= 3.5  # per terminal and day
    terminals = {d.device_id for d in simulation.fleet.terminals}
    for drop in drops:
        assert drop.device in terminals
        back = next(
            c
            for c in link_changes(events)
            if c.device == drop.device and c.at_ns > drop.at_ns and c.online
        )
        assert 2 * NS_PER_S <= back.at_ns - drop.at_ns <= 10 * NS_PER_S
    for device in terminals:
        reconnects = [c.at_ns for c in link_changes(events) if c.device == device and c.online]
        gaps = [b - a for a, b in itertools.pairwise(reconnects)]
        assert all(gap > 30 * 60 * NS_PER_S for gap in gaps)  # never a flapping link


def test_a_short_outage_with_jitter_starts_off_the_five_minute_grid(tmp_path: Path) -> None:
    toml = """
name = "short"
[[injection]]
type = "terminal_offline"
start = "9h"
jitter = "30m"
duration = "10m"
"""
    simulation, events = simulate(terminals=10, sensors=0, scenario=scenario_from(tmp_path, toml))
    label = only_label(simulation)
    assert label.start_ns % (60 * NS_PER_S) != 0  # so never on the 5-minute grid either
    assert 0 < label.start_ns - (START_NS + 9 * NS_PER_HOUR) < 30 * 60 * NS_PER_S
    assert label.end_ns - label.start_ns == 10 * 60 * NS_PER_S
    (device,) = label.devices
    cut = [
        c
        for c in link_changes(events)
        if c.device == device and c.at_ns not in (START_NS, START_NS + NS_PER_DAY)
    ]
    assert [(c.reason, c.at_ns) for c in cut] == [
        (StateReason.LAST_WILL, label.start_ns),
        (StateReason.CONNECTED, label.end_ns),
    ]


# -- sensor faults ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stuck", "drift", "jump"])
def test_a_sensor_fault_bends_the_reading_in_its_window_only(tmp_path: Path, mode: str) -> None:
    toml = f"""
name = "fault"
[[injection]]
type = "sensor_fault"
start = "10h"
duration = "3h"
mode = "{mode}"
intensity = 6
targets = "random 1"
"""
    faulty, events = simulate(terminals=10, sensors=4, scenario=scenario_from(tmp_path, toml))
    _, clean = simulate(terminals=10, sensors=4)
    label = only_label(faulty)
    assert label.type is InjectionType.SENSOR_FAULT and label.params["mode"] == mode
    (device,) = label.devices
    assert "-env" in device  # sensors only

    def temperatures(run: list[SimEvent]) -> dict[int, float]:
        return {
            m.ts: m.temperature_c
            for m in messages(run)
            if isinstance(m, SensorReading) and m.device == device
        }

    bent, true = temperatures(events), temperatures(clean)
    assert bent.keys() == true.keys()
    inside = sorted(ts for ts in bent if label.covers(ts))
    assert all(bent[ts] == true[ts] for ts in bent if not label.covers(ts))
    offsets = [bent[ts] - true[ts] for ts in inside]
    if mode == "stuck":
        assert len({bent[ts] for ts in inside}) == 1
        assert len({true[ts] for ts in inside}) > 10  # the room's did change
    elif mode == "drift":
        assert abs(offsets[0]) < 0.2 and 5.5 < offsets[-1] <= 6.0
        assert (
            offsets == sorted(offsets) or max(a - b for a, b in itertools.pairwise(offsets)) <= 0.02
        )  # rising (rounding aside)
    else:
        assert all(abs(offset - 6.0) <= 0.011 for offset in offsets)


# -- the shipped scenario ---------------------------------------------------------------


def test_the_realistic_scenario_uses_every_shape() -> None:
    scenario = load_scenario("realistic")
    assert scenario.traffic.dispersion == 3.0 and scenario.traffic.flaps_per_day > 0
    simulation, events = simulate(terminals=60, sensors=6, hours=72, scenario=scenario)
    kinds = {label.type for label in simulation.labels}
    assert kinds == {
        InjectionType.TERMINAL_OFFLINE,
        InjectionType.ACQUIRER_OUTAGE,
        InjectionType.CARD_TESTING,
        InjectionType.SENSOR_FAULT,
    }
    variants = {str(label.params.get("variant")) for label in simulation.labels}
    assert {"slow", "above_threshold"} <= variants
    assert any("ramp_min" in label.params for label in simulation.labels)
    outages = [x for x in simulation.labels if x.type is InjectionType.TERMINAL_OFFLINE]
    assert outages and all(x.start_ns % (60 * NS_PER_S) for x in outages)
    assert {d.kind for d in simulation.calendar.day} == {DayKind.SALE, DayKind.CLOSED}
    assert simulation.context.trading  # hours change, sale, dispersion
    reasons = [c.reason for c in link_changes(events) if isinstance(c, LinkChange)]
    assert reasons.count(StateReason.LAST_WILL) > 60  # flaps and outages
    # the closed site's terminals are off for the day, and powered on in the run
    assert simulation.context.power
    powered_on = {c.device for c in link_changes(events) if c.online and c.at_ns > START_NS}
    assert {cycle.device for cycle in simulation.context.power} <= powered_on
    assert all(cycle.on_ns < START_NS + 72 * NS_PER_HOUR for cycle in simulation.context.power)


@pytest.mark.integration
def test_over_mqtt_a_power_cycle_is_a_clean_shutdown_and_a_flap_a_last_will(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    toml = """
name = "cycles"
[traffic]
flaps_per_day = 4
[[day]]
kind = "closed"
day = 0
random = 1
terminals = "off"
"""
    shape = Shape(terminals=10, sensors=0, hours=30, scenario=scenario_from(tmp_path, toml))
    _, events = simulate(**shape)
    simulation = build(**shape)
    subscriber = Subscriber(mosquitto)
    stats = RunStats()
    run(simulation, MqttFleet(mosquitto.host, mosquitto.port, stats, window=10), stats=stats)
    changes = link_changes(events)
    wills = [c for c in changes if c.reason is StateReason.LAST_WILL]
    assert wills, "no flap to judge"
    states = len(changes) - len(wills)  # the will is the broker's to publish
    emissions = len(events) - len(changes)
    assert stats.published == stats.acknowledged == emissions + states
    subscriber.wait_settled(emissions + len(changes))
    subscriber.close()
    # a publish in flight when a connection drops is sent again: compare distinct states
    seen: dict[str, set[tuple[StateReason, int]]] = defaultdict(set)
    for topic, payload, _retained in subscriber.payloads:
        if topic.endswith("/state"):
            state = decode_as(payload, DeviceState)
            seen[state.device].add((state.reason, state.ts))
    cycled = {cycle.device for cycle in simulation.context.power}
    assert cycled
    for device in {d.device_id for d in simulation.fleet.terminals}:
        expected: set[tuple[StateReason, int]] = set()
        connected_at = START_NS
        for change in (c for c in changes if c.device == device):
            if change.reason is StateReason.CONNECTED:
                connected_at = change.at_ns
            # a will carries the time of its session's connect
            at = connected_at if change.reason is StateReason.LAST_WILL else change.at_ns
            expected.add((change.reason, at))
        assert seen[device] == expected  # each flap's will fired, and no other
        if device in cycled:
            reasons = [c.reason for c in changes if c.device == device]
            assert StateReason.SHUTDOWN in reasons[:-1]  # mid-run, then powered on

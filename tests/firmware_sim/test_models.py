"""The device models produce sane, valid data on a quiet day."""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
from collections import defaultdict

import msgspec
import pytest

from firmware_sim.event_engine import Emission, SimEvent
from firmware_sim.merchants import PROFILES, MerchantType
from firmware_sim.run_setup import Simulation
from firmware_sim.simtime import hour_of_week
from tests.firmware_sim.helpers import START_NS, messages, simulate
from wire import pci
from wire.messages import (
    DeviceState,
    PaymentTransaction,
    SensorReading,
    StateReason,
    TerminalStatus,
    decode,
    encode,
)
from wire.timestamps import NS_PER_HOUR, parse_iso
from wire.topics import validate_id


@pytest.fixture(scope="module")
def quiet_day() -> tuple[Simulation, list[SimEvent]]:
    return simulate(terminals=80, sensors=20, hours=24 * 7, status_every_s=900)


def payments(events: list[SimEvent]) -> list[PaymentTransaction]:
    return [m for m in messages(events) if isinstance(m, PaymentTransaction)]


def test_approval_rate_is_realistic(quiet_day: tuple[Simulation, list[SimEvent]]) -> None:
    paid = payments(quiet_day[1])
    rate = sum(p.approved for p in paid) / len(paid)
    assert 0.90 <= rate <= 0.97, rate
    codes = {p.response_code for p in paid if not p.approved}
    assert {"05", "51", "54", "55", "91", "96"} <= codes
    assert all(p.response_code == "00" for p in paid if p.approved)
    assert not any(p.offline for p in paid)


def test_amounts_follow_the_merchant_type(quiet_day: tuple[Simulation, list[SimEvent]]) -> None:
    by_mcc: dict[str, list[int]] = defaultdict(list)
    for payment in payments(quiet_day[1]):
        by_mcc[payment.mcc].append(payment.amount_minor)
    for profile in PROFILES.values():
        amounts = by_mcc[profile.mcc]
        assert len(amounts) > 200, profile.kind
        median = statistics.median(amounts)
        assert 0.8 * profile.amount_median_minor <= median <= 1.2 * profile.amount_median_minor
        assert min(amounts) >= profile.amount_min_minor
        assert max(amounts) <= profile.amount_max_minor
    cafe, fuel = PROFILES[MerchantType.CAFE], PROFILES[MerchantType.FUEL]
    assert statistics.median(by_mcc[cafe.mcc]) * 5 < statistics.median(by_mcc[fuel.mcc])


def test_traffic_follows_the_hour_of_week(quiet_day: tuple[Simulation, list[SimEvent]]) -> None:
    simulation, events = quiet_day
    merchant_of = {d.device_id: d.site.merchant for d in simulation.fleet.devices}
    per_hour: dict[int, int] = defaultdict(int)
    for payment in payments(events):
        merchant = merchant_of[payment.device]
        assert merchant.is_open(payment.ts), "a payment while the site is closed"
        per_hour[hour_of_week(payment.ts)[1]] += 1
    assert per_hour[3] == 0
    assert per_hour[12] > 3 * per_hour[6]
    assert per_hour[12] > per_hour[15]
    retail_sunday = [
        p
        for p in payments(events)
        if merchant_of[p.device].kind is MerchantType.RETAIL and hour_of_week(p.ts)[0] == 6
    ]
    assert retail_sunday == []


def test_every_device_counts_each_of_its_streams_on_its_own(
    quiet_day: tuple[Simulation, list[SimEvent]],
) -> None:
    seqs: dict[tuple[str, type], list[int]] = defaultdict(list)  # (device, message type)
    last_ts: dict[str, int] = {}
    for message in messages(quiet_day[1]):
        assert not isinstance(message, DeviceState)
        seqs[message.device, type(message)].append(message.seq)
        assert message.ts >= last_ts.get(message.device, 0)
        last_ts[message.device] = message.ts
    for key, values in seqs.items():
        assert values == list(range(1, len(values) + 1)), key
    devices = quiet_day[0].fleet.devices
    assert {device for device, _ in seqs} == {spec.device_id for spec in devices}
    # a terminal's two counters really are apart: both streams start at 1
    streams_of: dict[str, set[type]] = defaultdict(set)
    for device, kind in seqs:
        streams_of[device].add(kind)
    assert any(kinds == {PaymentTransaction, TerminalStatus} for kinds in streams_of.values())


def test_every_message_round_trips_and_carries_no_card_number(
    quiet_day: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = quiet_day
    sample = [e for e in events if not isinstance(e, Emission) or e.message.seq % 7 == 0]
    for event in sample:
        message = event.message if isinstance(event, Emission) else event.state()
        data = encode(message)
        assert decode(data) == message  # decode refuses card numbers in string fields
        strings = [v for v in msgspec.structs.astuple(message) if isinstance(v, str)]
        assert not any(pci.contains_pan(text) for text in strings)
        validate_id(message.site)
        validate_id(message.device)
    pans = {simulation.cards.pan(i) for i in range(50)}
    assert all(pci.luhn_valid(pan) and len(pan) == 16 for pan in pans)


def test_heartbeats_and_samples_are_periodic(quiet_day: tuple[Simulation, list[SimEvent]]) -> None:
    statuses = [m for m in messages(quiet_day[1]) if isinstance(m, TerminalStatus)]
    readings = [m for m in messages(quiet_day[1]) if isinstance(m, SensorReading)]
    per_device: dict[str, list[int]] = defaultdict(list)
    for status in statuses:
        per_device[status.device].append(status.ts)
        assert 0 <= status.battery_pct <= 100 and 0 <= status.paper_pct <= 100
        assert not status.tamper and status.offline_queue == 0
        assert 25.0 < status.temperature_c < 36.0
    for stamps in per_device.values():
        assert {b - a for a, b in itertools.pairwise(stamps)} == {900 * 10**9}
    assert len(readings) == 20 * 7 * 24 * 4
    assert any(r.door_open for r in readings) and not all(r.door_open for r in readings)


def test_portable_terminals_run_on_battery_while_open(
    quiet_day: tuple[Simulation, list[SimEvent]],
) -> None:
    simulation, events = quiet_day
    portable = {d.device_id for d in simulation.fleet.terminals if d.site.merchant.portable}
    assert portable
    statuses = [
        m for m in messages(events) if isinstance(m, TerminalStatus) and m.device in portable
    ]
    assert any(not s.charging for s in statuses) and any(s.charging for s in statuses)
    assert min(s.battery_pct for s in statuses) < 90


def test_a_run_opens_and_closes_every_connection() -> None:
    simulation, events = simulate(terminals=5, sensors=1, hours=1)
    first, last = events[: len(simulation.fleet.devices)], events[-len(simulation.fleet.devices) :]
    assert all(getattr(e, "reason", None) is StateReason.CONNECTED for e in first)
    assert all(getattr(e, "reason", None) is StateReason.SHUTDOWN for e in last)
    assert all(e.at_ns == START_NS + NS_PER_HOUR for e in last)


def hourly_counts(dispersion: float, seed: int, hours: int = 3000) -> list[int]:
    """Arrivals per hour of a terminal open around the clock at 30 payments an hour."""
    base = PROFILES[MerchantType.CAFE]
    always = dataclasses.replace(
        base, hours=((0, 24),) * 7, hourly=(1.0,) * 24, weekday=(1.0,) * 7, peak_per_hour=30.0,
        dispersion=dispersion,
    )  # fmt: skip
    rng = random.Random(f"{seed}:device:t")
    start = parse_iso("2026-11-02T00:00:00Z")
    counts = [0] * hours
    t: int | None = start
    while (t := always.next_arrival(rng, t, start + hours * NS_PER_HOUR)) is not None:
        counts[(t - start) // NS_PER_HOUR] += 1
    return counts


def test_hourly_counts_vary_more_than_poisson_by_the_merchant_dispersion() -> None:
    poisson = hourly_counts(0.0, seed=3)
    mixed = hourly_counts(0.1, seed=3)  # variance 30 + 0.1 x 30^2 = 4 x Poisson
    assert 0.85 < statistics.variance(poisson) / statistics.mean(poisson) < 1.15
    assert 29 < statistics.mean(mixed) < 31
    assert 3.4 < statistics.variance(mixed) / statistics.mean(mixed) < 4.6
    assert hourly_counts(0.1, seed=3) == mixed  # determined by the seed
    assert hourly_counts(0.1, seed=4) != mixed
    for profile in PROFILES.values():  # the fleet's: busy hours vary 1.4-2.6 x Poisson
        peak = profile.peak_per_hour * max(profile.weekday)
        assert 1.4 <= 1 + profile.dispersion * peak <= 2.6, profile.kind


def test_a_run_is_determined_by_its_seed() -> None:
    def paid(seed: int) -> list[tuple[str, int, int]]:
        _, events = simulate(terminals=6, sensors=0, hours=12, seed=seed)
        return [(p.device, p.ts, p.amount_minor) for p in payments(events)]

    first = paid(5)
    assert first == paid(5)
    assert first != paid(6)

"""The pty serial link, with this test playing the edge agent through pyserial."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.event_engine import Emission, SimMessage
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from firmware_sim.serial_link import SerialDevice, SerialFleet
from testkit.servers import wait_until
from tests.firmware_sim.helpers import (
    Agent,
    ack_frame,
    build,
    identity,
    messages,
    scenario_from,
    simulate,
)
from wire.framing import encode_frame
from wire.messages import LinkAck, PaymentTransaction, TerminalStatus, encode
from wire.topics import Stream


def acked(device: SerialDevice, count: int) -> bool:
    """Read the agent's replies; True once ``count`` acknowledgements arrived."""
    device.on_readable()
    return device.acks >= count


@pytest.fixture
def device() -> Iterator[SerialDevice]:
    link = SerialDevice("s0000-pos1", retransmit_s=0.2)  # the device simulate() makes
    yield link
    link.close()


def payment_and_status() -> list[SimMessage]:
    _, events = simulate(terminals=1, sensors=0, hours=12)
    sent = messages(events)
    payment = next(m for m in sent if isinstance(m, PaymentTransaction))
    status = next(m for m in sent if not isinstance(m, PaymentTransaction))
    return [payment, status]


def test_messages_round_trip_and_an_acked_payment_is_done(device: SerialDevice) -> None:
    agent = Agent(device.port)
    sent = payment_and_status()
    for message in sent:
        device.send(message)
    wait_until(lambda: agent.poll() == 2, timeout=5)
    assert agent.received == sent
    assert device.unacked == 1  # only the payment waits for its ack
    wait_until(lambda: acked(device, 2), timeout=5)
    assert device.unacked == 0 and device.bad_replies == 0
    agent.close()


def test_an_unacked_payment_is_sent_again_and_a_sample_never(device: SerialDevice) -> None:
    agent = Agent(device.port, ack=False)
    payment, status = payment_and_status()
    device.send(payment)
    device.send(status)

    def resent_twice() -> bool:
        device.retransmit(time.monotonic())
        agent.poll()
        return agent.received.count(payment) >= 3

    wait_until(resent_twice, timeout=5)
    assert agent.received.count(status) == 1
    assert device.retransmits == agent.received.count(payment) - 1
    agent.port.write(ack_frame(payment))
    wait_until(lambda: acked(device, 1), timeout=5)
    assert device.unacked == 0
    agent.close()


def test_an_ack_of_another_stream_with_the_same_seq_releases_no_payment(
    device: SerialDevice,
) -> None:
    """Each stream counts on its own: payment 1 and status 1 are two events, and the ack
    of status 1 must leave payment 1 held (and re-sent) until payment 1 is acknowledged."""
    agent = Agent(device.port, ack=False)
    payment, status = payment_and_status()
    assert isinstance(payment, PaymentTransaction) and isinstance(status, TerminalStatus)
    assert payment.seq == status.seq == 1  # the first of each stream
    device.send(payment)
    device.send(status)
    wait_until(lambda: agent.poll() == 2, timeout=5)
    agent.port.write(ack_frame(status))
    for stream in (Stream.SENSOR, Stream.STATUS):  # acks a device may get; none is a payment's
        agent.port.write(encode_frame(encode(LinkAck(device=device.device, stream=stream, seq=1))))
    wait_until(lambda: acked(device, 3), timeout=5)
    assert device.unacked == 1  # the payment is still held

    def resent() -> bool:
        device.retransmit(time.monotonic())
        agent.poll()
        return agent.received.count(payment) >= 2

    wait_until(resent, timeout=5)
    agent.port.write(ack_frame(payment))
    wait_until(lambda: acked(device, 4), timeout=5)
    assert device.unacked == 0 and device.bad_replies == 0
    agent.close()


def test_an_ack_without_a_stream_is_a_bad_reply(device: SerialDevice) -> None:
    agent = Agent(device.port, ack=False)
    payment, _ = payment_and_status()
    device.send(payment)
    old_ack = b'{"schema":"ack/1","device":"%s","seq":%d}' % (device.device.encode(), payment.seq)
    agent.port.write(encode_frame(old_ack))

    def refused() -> bool:
        device.on_readable()
        return device.bad_replies == 1

    wait_until(refused, timeout=5)
    assert device.unacked == 1 and device.acks == 0
    agent.close()


def test_noise_and_corrupt_frames_are_counted_exactly_by_the_receiver(
    device: SerialDevice,
) -> None:
    agent = Agent(device.port)
    payment, status = payment_and_status()
    device.corrupt_next(3)
    device.send(payment)  # corrupted: the agent never sees it, so no ack
    device.send(status)  # corrupted: lost for good
    device.inject_noise(5)
    device.send(status)  # corrupted too: the budget was 3
    device.send(status)

    def settled() -> bool:
        device.on_readable()
        device.retransmit(time.monotonic())
        agent.poll()
        return device.unacked == 0

    wait_until(settled, timeout=5)
    stats = agent.decoder.stats
    assert device.frames_corrupted == 3 and device.noise_bursts == 5
    assert stats.frames_bad == 8 and stats.frames_bad_crc >= 3
    assert agent.received == [status, payment]  # the payment arrived on its re-send
    agent.close()


def test_a_corrupt_frame_scenario_through_the_serial_fleet(tmp_path: Path) -> None:
    scenario = scenario_from(
        tmp_path,
        'name = "noisy"\n[[injection]]\ntype = "corrupt_frames"\nstart = "0s"\n'
        'duration = "10h"\ntargets = { random = 3 }\nintensity = 0.3\n'
        '[[injection]]\ntype = "duplicate_sends"\nstart = "1h"\nduration = "2h"\n'
        "targets = { random = 2 }\nintensity = 0.3\n",
    )
    simulation, events = simulate(
        terminals=3, sensors=1, hours=10, scenario=scenario, status_every_s=300
    )
    expected = messages(events)
    simulation = build(terminals=3, sensors=1, hours=10, scenario=scenario, status_every_s=300)
    fleet = SerialFleet([d.device_id for d in simulation.fleet.devices], retransmit_s=0.2)
    agents = {name: Agent(port) for name, port in fleet.ports().items()}
    stats = RunStats()
    worker = threading.Thread(target=run, args=(simulation, fleet), kwargs={"stats": stats})
    worker.start()

    def finished() -> bool:
        alive = worker.is_alive()
        for agent in agents.values():
            agent.poll()
        return not alive

    wait_until(finished, timeout=30, interval=0.005)
    worker.join()
    corrupted = sum(d.frames_corrupted for d in fleet.devices.values())
    bad = sum(a.decoder.stats.frames_bad for a in agents.values())
    # every corrupted frame is one bad frame at the agent, no more, no fewer
    assert corrupted == bad == stats.corrupted
    received = [m for a in agents.values() for m in a.received]
    emissions = [e for e in events if isinstance(e, Emission)]
    intact = {identity(e.message) for e in emissions if not e.corrupt}
    payments = {identity(m) for m in expected if isinstance(m, PaymentTransaction)}
    # a payment always arrives (re-sent until acked); a sample only if one copy was intact
    wanted = payments | intact
    assert {identity(m) for m in received} == wanted
    assert stats.corrupted > 10 and stats.duplicates > 5 and len(payments) > 50
    assert sum(d.retransmits for d in fleet.devices.values()) > 5  # corrupted payments re-sent
    for agent in agents.values():
        agent.close()

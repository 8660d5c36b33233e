"""Direct MQTT mode against a real Mosquitto: every event arrives, last wills fire."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.cli import main
from firmware_sim.event_engine import Emission
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from testkit.servers import MosquittoServer, ServerFactory, free_port, wait_until
from tests.firmware_sim.helpers import Shape, build, link_changes, scenario_from, simulate
from wire.errors import MessageDecodeError
from wire.incidents import InjectionType
from wire.labels import read_labels
from wire.messages import (
    DeviceState,
    PaymentTransaction,
    StateReason,
    decode_as,
    decode_device_message,
)
from wire.topics import device_subscription, parse_device_topic

pytestmark = pytest.mark.integration


class Subscriber:
    """Counts every message on every device topic (QoS 1)."""

    def __init__(self, broker: MosquittoServer) -> None:
        self.lock = threading.Lock()
        self.payloads: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-sub", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(device_subscription(), qos=1)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, timeout=10, message="no SUBACK")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def count(self) -> int:
        with self.lock:
            return len(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


SCENARIO = """
name = "mqtt"
[[injection]]
type = "terminal_offline"
start = "8h"
duration = "1h"
targets = "random 2"
[[injection]]
type = "duplicate_sends"
start = "9h"
duration = "2h"
targets = "random 3"
intensity = 0.3
[[injection]]
type = "corrupt_frames"
start = "10h"
duration = "1h"
targets = "random 3"
intensity = 0.2
"""


def test_every_event_arrives_and_the_broker_fires_the_last_will(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    scenario = scenario_from(tmp_path, SCENARIO)
    shape = Shape(terminals=25, sensors=5, hours=12, scenario=scenario)
    _, events = simulate(**shape)
    simulation = build(**shape)
    subscriber = Subscriber(mosquitto)
    stats = RunStats()
    fleet = MqttFleet(mosquitto.host, mosquitto.port, stats, window=10, max_backlog=2_000)
    run(simulation, fleet, stats=stats)
    emissions = [e for e in events if isinstance(e, Emission)]
    mangled = sum(e.corrupt for e in emissions)
    # a mangled payment is followed by its intact re-send; a mangled sample is lost
    intact = [e for e in emissions if not e.corrupt or isinstance(e.message, PaymentTransaction)]
    changes = link_changes(events)
    states = sum(c.reason is not StateReason.LAST_WILL for c in changes)  # the will is the broker's
    expected = len(intact) + mangled + states
    assert stats.published == stats.acknowledged == expected
    wills = sum(c.reason is StateReason.LAST_WILL for c in changes)
    wait_until(
        lambda: subscriber.count() >= expected + wills,
        timeout=30,
        message=lambda: f"got {subscriber.count()} of {expected + wills}",
    )
    subscriber.close()

    received: Counter[tuple[str, int]] = Counter()
    bad = 0
    will_states: list[DeviceState] = []
    for topic, payload, _retained in subscriber.payloads:
        try:  # checks the payload's type and ids against the topic
            message = decode_device_message(parse_device_topic(topic), payload)
        except MessageDecodeError:
            bad += 1
            continue
        if isinstance(message, DeviceState):
            if message.reason is StateReason.LAST_WILL:
                will_states.append(message)
        else:
            received[(message.device, message.seq)] += 1
    sent = Counter((e.message.device, e.message.seq) for e in intact)
    offline = next(lb for lb in simulation.labels if lb.type is InjectionType.TERMINAL_OFFLINE)
    # every intact publish arrived, duplicate sends included; a publish in flight when a
    # connection was cut is sent again by paho after the reconnect: at least once
    assert set(received) == set(sent)
    redelivered = received - sent
    assert not sent - received
    assert {device for device, _ in redelivered} <= set(offline.devices)
    assert bad == mangled > 0
    assert sorted(s.device for s in will_states) == sorted(offline.devices)
    assert stats.duplicates > 0


def test_retained_states_tell_how_each_device_left(mosquitto: MosquittoServer) -> None:
    simulation = build(terminals=4, sensors=1, hours=1)
    stats = RunStats()
    run(simulation, MqttFleet(mosquitto.host, mosquitto.port, stats), stats=stats)
    assert stats.published == stats.acknowledged > 0
    late = Subscriber(mosquitto)  # joins after the run: sees only retained messages
    devices = {d.device_id for d in simulation.fleet.devices}
    wait_until(lambda: late.count() >= len(devices), timeout=10)
    late.close()
    states = [decode_as(payload, DeviceState) for _, payload, retained in late.payloads if retained]
    assert {s.device for s in states} == devices
    assert all(s.reason is StateReason.SHUTDOWN and not s.online for s in states)


def test_cli_runs_the_demo_against_mosquitto(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    """`tillpulse sim fleet --mqtt` delivers what `--out` writes (the same run), and
    the labels."""
    common = ["fleet", "--terminals", "20", "--sensors", "5", "--scenario", "demo",
              "--duration", "1d", "--accel", "0", "--start", "2026-11-23T00:00:00Z",
              "--status-every", "900", "--sensor-every", "900", "--quiet"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "events.jsonl")]) == 0
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    labels = tmp_path / "labels.jsonl"
    subscriber = Subscriber(mosquitto)
    broker = f"{mosquitto.host}:{mosquitto.port}"
    assert main([*common, "--mqtt", broker, "--labels", str(labels)]) == 0
    assert {lb.type for lb in read_labels(labels)} == {
        InjectionType.TERMINAL_OFFLINE, InjectionType.ACQUIRER_OUTAGE,
        InjectionType.CARD_TESTING, InjectionType.TAMPER,
    }  # fmt: skip
    expected = {line for line in lines if b'"last-will"' not in line}  # the will: its own ts
    assert len(expected) > 3_000

    def missing() -> set[bytes]:  # a count would also count the broker's wills and repeats
        with subscriber.lock:
            return expected - {p for _, p, _ in subscriber.payloads}

    wait_until(lambda: not missing(), timeout=20,
               message=lambda: f"{len(missing())} of {len(expected)} not received")  # fmt: skip
    subscriber.close()


def test_cli_fails_fast_without_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fleet", "--terminals", "2", "--duration", "1h", "--accel", "0",
            "--mqtt", f"127.0.0.1:{free_port()}", "--quiet"]  # fmt: skip
    assert main(argv) == 1
    assert "event=sim_failed" in capsys.readouterr().err


def test_cli_fails_when_the_broker_refuses_publishes(
    mosquitto_factory: ServerFactory[MosquittoServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("pattern write tp/v1/nobody/%c\n")  # no device may publish its data
    broker = mosquitto_factory(extra_config=f"acl_file {acl}\n")
    argv = ["fleet", "--terminals", "2", "--duration", "30m", "--accel", "0",
            "--mqtt", f"{broker.host}:{broker.port}", "--quiet"]  # fmt: skip
    assert main(argv) == 1
    assert "event=publishes_refused" in capsys.readouterr().err


def test_a_device_cut_off_before_its_connack_still_leaves_a_will(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    scenario = scenario_from(
        tmp_path,
        'name = "early"\n[[injection]]\ntype = "terminal_offline"\nstart = "0s"\n'
        'duration = "10m"\ntargets = "random 3"\n',
    )
    simulation = build(terminals=6, sensors=0, hours=1, scenario=scenario)
    subscriber = Subscriber(mosquitto)
    stats = RunStats()
    run(simulation, MqttFleet(mosquitto.host, mosquitto.port, stats), stats=stats)
    (label,) = simulation.labels

    def wills() -> list[str]:
        with subscriber.lock:
            states = [decode_as(p, DeviceState) for t, p, _ in subscriber.payloads if "/state" in t]
        return sorted(s.device for s in states if s.reason is StateReason.LAST_WILL)

    wait_until(lambda: wills() == sorted(label.devices), timeout=10, message=lambda: str(wills()))
    subscriber.close()

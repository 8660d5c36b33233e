"""Direct MQTT mode against a real Mosquitto: every event arrives, last wills fire; and
the simulator speaks MQTT through mqtt5's public API only (paho is the tests' own
subscriber)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import mqtt5
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import firmware_sim
from firmware_sim.cli import main
from firmware_sim.event_engine import Emission, LinkChange
from firmware_sim.mqtt_fleet import MqttFleet, MqttSimError
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
from wire.topics import DEVICE_PREFIX, device_subscription, parse_device_topic


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

    def wait_settled(self, at_least: int, timeout: float = 30.0, quiet_s: float = 1.0) -> None:
        """``at_least`` messages, then none for ``quiet_s``: a publish in flight at a cut is
        sent again, so the count can be reached while the last distinct ones still travel."""
        wait_until(
            lambda: self.count() >= at_least,
            timeout=timeout,
            message=lambda: f"got {self.count()} of {at_least}",
        )
        last = {"n": -1}

        def unchanged() -> bool:
            now = self.count()
            same, last["n"] = now == last["n"], now
            return same

        wait_until(unchanged, timeout=timeout, interval=quiet_s, message="messages kept coming")

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


@pytest.mark.integration
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
    subscriber.wait_settled(expected + wills)
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
    # connection was cut is sent again after the reconnect: at least once
    assert set(received) == set(sent)
    redelivered = received - sent
    assert not sent - received
    assert {device for device, _ in redelivered} <= set(offline.devices)
    assert bad == mangled > 0
    assert sorted(s.device for s in will_states) == sorted(offline.devices)
    assert stats.duplicates > 0


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_cli_fails_fast_without_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fleet", "--terminals", "2", "--duration", "1h", "--accel", "0",
            "--mqtt", f"127.0.0.1:{free_port()}", "--connect-timeout", "0.5",
            "--quiet"]  # fmt: skip
    assert main(argv) == 1
    assert "is unreachable" in capsys.readouterr().err


@pytest.mark.integration
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
    assert "refused" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.integration
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


@pytest.mark.integration
def test_each_device_logs_in_as_itself_with_the_password(
    mosquitto_factory: ServerFactory[MosquittoServer], tmp_path: Path
) -> None:
    """A broker that takes only the devices' accounts, makes every client id its
    username, and lets each one write only to its own topics: nothing refused. With
    a wrong password nothing gets through, and the fleet says so."""
    simulation = build(terminals=3, sensors=1, hours=1)
    devices = [d.device_id for d in simulation.fleet.devices]
    acl = tmp_path / "acl"
    acl.write_text(f"pattern write {DEVICE_PREFIX}/+/%u/+\n")
    broker = mosquitto_factory(
        accounts=dict.fromkeys(devices, "s3cret-device-pw"), extra_config=f"acl_file {acl}\n"
    )
    stats = RunStats()
    fleet = MqttFleet(broker.host, broker.port, stats, password="s3cret-device-pw")
    run(simulation, fleet, stats=stats)
    assert stats.published == stats.acknowledged > len(devices)
    assert stats.refused == 0

    stats = RunStats()
    fleet = MqttFleet(broker.host, broker.port, stats, password="wrong")
    # refused at CONNACK: at once, not after the drain timeout
    with pytest.raises(MqttSimError, match=rf"{broker.port} refused the login of username s0000-"):
        run(build(terminals=3, sensors=1, hours=1), fleet, stats=stats)
    assert stats.acknowledged == 0


@pytest.mark.integration
def test_a_device_whose_connection_the_broker_takes_away_ends_the_run_at_once(
    mosquitto: MosquittoServer,
) -> None:
    """Another client logs in with a device's client id: Mosquitto hands it the session
    and closes the device's connection (2.0.11 sends no DISCONNECT). The fleet names
    the device and the likely cause at once, instead of leaving it silent and every
    later count wrong."""
    fleet = MqttFleet(mosquitto.host, mosquitto.port, RunStats())
    events = build(terminals=1, sensors=0, hours=1).engine.events()
    connected = next(e for e in events if isinstance(e, LinkChange))
    fleet.handle(connected)
    fleet.idle_until(time.monotonic() + 0.2)  # CONNACK, the online state acknowledged
    thief = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=connected.device, protocol=mqtt.MQTTv5
    )
    thief.connect(mosquitto.host, mosquitto.port)
    thief.loop_start()
    try:
        started = time.monotonic()
        with pytest.raises(MqttSimError) as failure:
            fleet.idle_until(started + 10)
        assert time.monotonic() - started < 5
    finally:
        thief.disconnect()
        thief.loop_stop()
    assert f"dropped the connection of device {connected.device}" in str(failure.value)
    assert "client id taken over?" in str(failure.value)
    fleet.close()  # tears down without waiting for a drain


# -- MQTT through mqtt5's public API only ------------------------------------------------

PRIVATE_GETTERS = ("getattr", "setattr", "hasattr", "delattr")


def mqtt5_public_names() -> frozenset[str]:
    """What mqtt5 publishes as its API: the names its type stub (mqtt5.pyi) declares."""
    stub = ast.parse((Path(mqtt5.__file__).parent / "mqtt5.pyi").read_text())
    names = set()
    for node in stub.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _forbidden_module(name: str) -> bool:
    """paho at all (the fleet's MQTT is mqtt5's), or the compiled module behind mqtt5."""
    return name == "paho" or name.startswith(("paho.", "mqtt5."))


def private_uses(source: str, public: frozenset[str]) -> list[str]:
    """Where ``source`` reaches past a library's public API: an import of paho or of
    ``mqtt5.<inner module>``, a name mqtt5 does not declare (``public``), a private
    attribute ``x._name`` of anything but ``self``/``cls`` (``super()._m`` included),
    ``getattr(x, "_name")`` and the like, or a class derived from one of mqtt5's."""
    found = []
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _forbidden_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _forbidden_module(module):
                found.append(f"{where}: from {module} import")
            elif module == "mqtt5":
                found += [f"{where}: mqtt5.{a.name}" for a in node.names if a.name not in public]
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner == "mqtt5" and node.attr not in public:
                found.append(f"{where}: mqtt5.{node.attr}")
            elif _is_private(node.attr) and owner not in ("self", "cls"):
                found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in PRIVATE_GETTERS and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and _is_private(str(name.value)):
                    found.append(f"{where}: {node.func.id}(..., {name.value!r})")
        elif isinstance(node, ast.ClassDef):
            bases = [ast.unparse(base) for base in node.bases]
            found += [f"{where}: class {node.name}({b})" for b in bases if b.startswith("mqtt5.")]
    return found


def firmware_sim_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(firmware_sim.__path__, prefix="firmware_sim.")
        if info.name != "firmware_sim.__main__"
    ]


def test_the_simulator_speaks_mqtt_through_mqtt5s_public_api_only() -> None:
    """The project's rule: never override or touch a library's private API. No
    firmware_sim module imports paho (the fleet's MQTT is the mqtt5 codec on its own
    sockets), takes from mqtt5 a name its stub does not declare, touches a private
    attribute of anything but itself, or derives a class from mqtt5's."""
    public = mqtt5_public_names()
    assert {"read", "PublishPacket", "PubAckPacket", "ConnectPacket"} <= public
    problems: list[str] = []
    sources = {
        name: inspect.getsource(importlib.import_module(name)) for name in firmware_sim_modules()
    }
    for name, source in sources.items():
        problems += [f"{name} {p}" for p in private_uses(source, public)]
    assert not problems, "a library's private API used:\n" + "\n".join(problems)
    # the check looked at the code that speaks MQTT
    assert sum("mqtt5." in source for source in sources.values()) >= 2


def test_the_private_api_check_catches_what_the_simulator_must_not_do() -> None:
    """The check above is not vacuous: it flags paho, mqtt5's insides, overrides and
    private attributes, and passes the public calls the fleet makes."""
    public = mqtt5_public_names()
    assert (
        len(private_uses("import paho.mqtt.client as mqtt\nfrom paho.mqtt import enums\n", public))
        == 2
    )
    insides = "from mqtt5.mqtt5 import read\nimport mqtt5\nmqtt5.mqtt5.read\nmqtt5._codec\n"
    assert len(private_uses(insides, public)) == 3
    override = (
        "class C(Client):\n"
        "    def _sock_recv(self, n):\n"
        "        return super()._sock_recv(n)\n"
        "class P(mqtt5.PublishPacket):\n"
        "    pass\n"
    )
    assert len(private_uses(override, public)) == 2
    outside = "def f(client):\n    client._out_messages.clear()\n    getattr(client, '_sock')\n"
    assert len(private_uses(outside, public)) == 2
    own = "class F:\n    def __init__(self):\n        self._password = None\n"
    fleet_calls = (
        "import mqtt5\n"
        "packet, size = mqtt5.read(memoryview(b''))\n"
        "mqtt5.PublishPacket('t', b'p', qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1).write()\n"
    )
    assert private_uses(own, public) == private_uses(fleet_calls, public) == []

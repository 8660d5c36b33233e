"""The real edge agent (`python -m edge run`) of a Pi reading two terminals and a sensor
on ptys, through a broker provisioned from the registry: every message of every device
reaches a gateway's account, with the password `broker provision` wrote for the Pi."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from testkit.servers import wait_until
from tests.broker.conftest import Fleet
from tests.deploy.conftest import SERVICE_PASSWORDS
from tests.edge.test_agent import AgentProcess, Terminal, status
from wire.messages import SensorReading, encode
from wire.topics import Stream, device_subscription, device_topic, parse_device_topic

pytestmark = pytest.mark.integration

SITE = "s0001"  # tests.edge.test_agent's messages are of this site too
PI = "s0001-pi1"  # tests/broker/conftest.py's REGISTRY: its devices are these
TERMINALS = ("s0001-pos1", "s0001-pos2")
SENSOR = "s0001-env1"
PAYMENTS, STATUSES, READINGS = 100, 10, 20


def reading(seq: int) -> SensorReading:
    return SensorReading(
        site=SITE,
        device=SENSOR,
        ts=1_764_000_000_000_000_000 + seq,
        seq=seq,
        temperature_c=21.5,
        humidity_pct=40.0,
        door_open=False,
        mains_power=True,
    )


@pytest.fixture
def devices() -> Iterator[list[Terminal]]:
    made = [Terminal(device) for device in (*TERMINALS, SENSOR)]
    yield made
    for terminal in made:
        terminal.close()


def start_agent(fleet: Fleet, tmp_path: Path, devices: list[Terminal]) -> AgentProcess:
    """The Pi's agent as the field engineer configures it: username = its id, the
    password file `broker provision` wrote (copied to /etc/tillpulse/mqtt-password)."""
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{PI}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {fleet.broker.port}\nusername = "{PI}"\n'
        f'password_file = "{fleet.broker.secrets_dir / f"{PI}.password"}"\n'
        "[health]\ninterval_s = 0.5\n"
        + "".join(f'[[serial]]\nport = "{device.port}"\n' for device in devices)
    )
    agent = AgentProcess(config)
    wait_until(
        lambda: agent.log().count("event=serial_opened") >= len(devices),
        20,
        interval=0.05,
        message=lambda: f"serial ports not opened; log:\n{agent.log()}",
    )
    return agent


def test_a_pis_two_terminals_and_sensor_all_get_through_the_provisioned_broker(
    fleet: Fleet, tmp_path: Path, devices: list[Terminal]
) -> None:
    reader = fleet.connect("gw1", SERVICE_PASSWORDS["gw1"])
    assert reader.subscribe(device_subscription("gateways")).value == 1
    agent = start_agent(fleet, tmp_path, devices)
    try:
        *terminals, sensor = devices
        for terminal in terminals:
            terminal.payments(1, PAYMENTS)
            terminal.send(*(status(terminal.device, seq) for seq in range(1, STATUSES + 1)))
        sensor.send(*(reading(seq) for seq in range(1, READINGS + 1)))
        sent = {device.device: {encode(m) for m in device.sent.values()} for device in devices}

        def delivered() -> dict[str, set[bytes]]:
            by_device: dict[str, set[bytes]] = {device: set() for device in (PI, *sent)}
            for topic, payload in reader.received():
                by_device[parse_device_topic(topic).device].add(payload)
            return by_device

        wait_until(
            lambda: all(delivered()[device] >= sent[device] for device in sent),
            60,
            interval=0.05,
            message=lambda: str({d: (len(sent[d]), len(delivered()[d])) for d in sent}),
        )
        wait_until(lambda: len(delivered()[PI]) >= 2, 10, message="no health or state of the Pi")
        own = delivered()[PI]
    finally:
        assert agent.terminate() == 0, agent.log()

    counts = {device: (len(sent[device]), len(delivered()[device])) for device in sent}
    print(f"sent, delivered per device: {counts}; the Pi's own health/state: {len(own)}")
    assert delivered() | {PI: set()} == sent | {PI: set()}  # nothing else, nothing lost
    streams = {parse_device_topic(topic).stream for topic, _ in reader.received()}
    assert streams == set(Stream)
    state = device_topic(SITE, PI, Stream.STATE)
    online = [msgspec.json.decode(p) for t, p in reader.received() if t == state]
    assert online and online[0]["online"] is True
    assert "not authorized" not in agent.log().lower()


def test_revoking_the_pi_drops_its_agent_and_refuses_its_reconnects(
    fleet: Fleet, tmp_path: Path, devices: list[Terminal]
) -> None:
    # one idle terminal (an agent needs a [[serial]] port): it only keeps its link up
    agent = start_agent(fleet, tmp_path, devices[:1])
    try:
        wait_until(lambda: "event=broker_connected" in agent.log(), 10, message="not connected")

        assert fleet.broker_command("revoke", "--agent", PI, "--reason", "stolen").code == 0

        wait_until(
            lambda: 'error="CONNACK Not authorized"' in agent.log(),
            10,
            message=lambda: f"not refused; log:\n{agent.log()}",
        )
        assert "event=broker_lost" in agent.log()  # dropped at once, not at its next connect
    finally:
        assert agent.terminate() == 0

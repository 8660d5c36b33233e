"""The stack's broker config (deploy/mosquitto) on a real Mosquitto: who may connect,
publish and subscribe, with the password file written by its entrypoint.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.factories import payment
from testkit.servers import VictoriaMetricsServer, free_port, wait_until
from tests.deploy.conftest import (
    ACCOUNTS,
    DEPLOY,
    DEVICES,
    NOT_AUTHORIZED,
    SERVICE_PASSWORDS,
    SITE,
    Client,
    DeployBroker,
    add_device,
    device_client,
    gateway_client,
    reads_nothing,
    run_entrypoint,
)
from tests.gateway.test_service import fetch, running_gateway
from wire.messages import encode
from wire.topics import alert_topic, device_subscription, device_topic, parse_device_topic

pytestmark = pytest.mark.integration

DEVICE_A, DEVICE_B = DEVICES


def test_a_device_publishes_under_its_own_topic_and_a_gateway_receives_it(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(deploy_broker, clients)
    device = device_client(deploy_broker, clients, DEVICE_A)
    topic = device_topic(SITE, DEVICE_A, "payment")

    assert not device.publish(topic, b"own").is_failure

    wait_until(
        lambda: gateway.received() == [(topic, b"own")], 10, message=lambda: str(gateway.received())
    )


def test_a_device_publishing_under_another_devices_topic_is_dropped(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(deploy_broker, clients)
    device = device_client(deploy_broker, clients, DEVICE_A)
    forged = device_topic(SITE, DEVICE_B, "payment")
    own = device_topic(SITE, DEVICE_A, "payment")

    assert device.publish(forged, b"forged").value == NOT_AUTHORIZED
    assert device.publish(alert_topic(SITE, "tamper"), b"fake alert").value == NOT_AUTHORIZED
    device.publish(own, b"after")

    # Messages of one client arrive in order: once "after" is in, "forged" never comes.
    wait_until(gateway.received, 10, message="nothing arrived")
    assert gateway.received() == [(own, b"after")]


def test_a_device_reads_nothing(deploy_broker: DeployBroker, clients: list[Client]) -> None:
    gateway = gateway_client(deploy_broker, clients)
    reader = device_client(deploy_broker, clients, DEVICE_A)
    writer = device_client(deploy_broker, clients, DEVICE_B)
    reader.subscribe(device_subscription())  # Mosquitto grants it; the ACL filters deliveries

    assert reads_nothing(reader, writer, device_topic(SITE, DEVICE_B, "payment"), gateway)


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), (DEVICE_A, "wrong"), (DEVICE_A, DEVICES[DEVICE_B]), ("gw1", None)],
    ids=["anonymous", "wrong-password", "another-devices-password", "no-password"],
)
def test_the_device_listener_refuses_clients_without_valid_credentials(
    deploy_broker: DeployBroker, clients: list[Client], username: str | None, password: str | None
) -> None:
    client = Client(deploy_broker.port, username=username, password=password)
    clients.append(client)
    assert client.connack is not None
    assert client.connack.value == NOT_AUTHORIZED, client.connack


def test_the_cloud_jobs_may_publish_alerts(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    cloud = Client(deploy_broker.port, username="cloud", password=SERVICE_PASSWORDS["cloud"])
    clients.append(cloud)
    assert cloud.connected, cloud.connack
    assert not cloud.publish(alert_topic(SITE, "tamper"), b"{}").is_failure
    assert cloud.publish(device_topic(SITE, DEVICE_A, "payment"), b"x").value == NOT_AUTHORIZED


def test_a_simulated_device_publishes_only_under_its_client_id(
    sim_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(sim_broker, clients)
    simulated = Client(sim_broker.sim_port, client_id=DEVICE_A)  # anonymous, as sim fleet
    clients.append(simulated)
    assert simulated.connected, simulated.connack
    own = device_topic(SITE, DEVICE_A, "status")

    assert simulated.publish(device_topic(SITE, DEVICE_B, "status"), b"forged").value == (
        NOT_AUTHORIZED
    )
    assert not simulated.publish(own, b"own").is_failure
    wait_until(gateway.received, 10, message="nothing arrived")
    assert gateway.received() == [(own, b"own")]

    simulated.subscribe(device_subscription())
    writer = Client(sim_broker.sim_port, client_id=DEVICE_B)
    clients.append(writer)
    assert reads_nothing(simulated, writer, device_topic(SITE, DEVICE_B, "status"), gateway)


def test_restarting_the_broker_with_new_service_passwords_keeps_the_devices(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    deploy_broker.stop()
    rotated = {**ACCOUNTS, "MQTT_GW1_PASSWORD": "gw1-secret-2"}
    run_entrypoint(deploy_broker, rotated)
    deploy_broker.start()

    def connects(username: str, password: str) -> bool:
        client = Client(deploy_broker.port, username=username, password=password)
        clients.append(client)
        return client.connected

    assert connects("gw1", "gw1-secret-2")
    assert not connects("gw1", SERVICE_PASSWORDS["gw1"])
    assert connects("gw2", SERVICE_PASSWORDS["gw2"])
    assert connects("cloud", SERVICE_PASSWORDS["cloud"])
    assert connects(DEVICE_A, DEVICES[DEVICE_A])


def test_the_simulated_fleet_gets_through_the_simulated_fleet_listener(
    sim_broker: DeployBroker, clients: list[Client]
) -> None:
    # as the compose file's fleet service runs it (but 30 simulated minutes, at once)
    gateway = gateway_client(sim_broker, clients)
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600))
    fleet = [
        *(sys.executable, "-m", "firmware_sim", "fleet", "--quiet", "--accel", "0"),
        *("--mqtt", f"127.0.0.1:{sim_broker.sim_port}", "--start", start),
        *("--terminals", "3", "--sensors", "1", "--duration", "30m"),
    ]
    done = subprocess.run(
        fleet,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    def devices() -> set[str]:
        return {parse_device_topic(topic).device for topic, _ in gateway.received()}

    wait_until(lambda: len(devices()) == 4, 10, message=lambda: f"devices seen: {devices()}")


def test_a_gateway_run_from_the_stacks_config_gets_a_devices_payment_to_influxdb(
    deploy_broker: DeployBroker,
    victoriametrics: VictoriaMetricsServer,
    clients: list[Client],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # deploy/gateway.toml with only the addresses the compose network gives moved here
    http_port = free_port()
    overrides = {
        "MQTT__HOST": deploy_broker.host,
        "MQTT__PORT": str(deploy_broker.port),
        "INFLUXDB__URL": victoriametrics.url,
        "GATEWAY__STATE_DIR": str(tmp_path / "gateway"),
        "HTTP__LISTEN": f"127.0.0.1:{http_port}",
    }
    for key, value in overrides.items():
        monkeypatch.setenv(f"TILLPULSE_GATEWAY__{key}", value)
    monkeypatch.setenv("TILLPULSE_MQTT_PASSWORD", SERVICE_PASSWORDS["gw1"])
    monkeypatch.setenv("TILLPULSE_INFLUX_TOKEN", "any: VictoriaMetrics takes no token")

    with running_gateway(DEPLOY / "gateway.toml"):
        device = device_client(deploy_broker, clients, DEVICE_A)
        # A sale of now: the stack's gateway takes the default window (30 days back).
        sale = payment(
            site=SITE, device=DEVICE_A, seq=1, txn_id=f"{DEVICE_A}-t1", ts=time.time_ns()
        )
        assert not device.publish(device_topic(SITE, DEVICE_A, "payment"), encode(sale)).is_failure

        victoriametrics.wait_for_export(f'payment_amount_minor{{device="{DEVICE_A}"}}')
        assert fetch(f"http://127.0.0.1:{http_port}/healthz")[0] == 200


def test_a_device_added_with_a_sighup_connects_and_the_others_stay(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    # docs/operations.md, "Devices": mosquitto_passwd -b, then SIGHUP to the broker
    connected = device_client(deploy_broker, clients, DEVICE_A)
    add_device(deploy_broker, "s0002-pos1", "new-secret")
    assert deploy_broker.pid is not None
    os.kill(deploy_broker.pid, signal.SIGHUP)

    def new_device_connects() -> bool:
        client = Client(deploy_broker.port, username="s0002-pos1", password="new-secret")
        clients.append(client)
        return client.connected

    wait_until(new_device_connects, 10, message="the new device is still refused")
    assert not connected.publish(device_topic(SITE, DEVICE_A, "status"), b"still here").is_failure
    assert connected.disconnects == 0


def test_a_packet_larger_than_any_device_payload_is_refused_by_the_broker(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(deploy_broker, clients)
    topic = device_topic(SITE, DEVICE_A, "payment")
    hostile = device_client(deploy_broker, clients, DEVICE_A)
    hostile.send(topic, b"x" * 100_000)
    wait_until(lambda: hostile.disconnects >= 1, 10, message="the broker kept the connection")
    hostile.close()
    device = device_client(deploy_broker, clients, DEVICE_A)
    assert not device.publish(topic, b"after").is_failure
    wait_until(gateway.received, 10, message="nothing arrived")
    assert gateway.received() == [(topic, b"after")]

"""The stack's broker config (deploy/mosquitto) on a real Mosquitto: who may connect,
publish and subscribe, with the service accounts written by its entrypoint.sh and the
agents provisioned from a registry (`tillpulse broker provision`; tests/broker tests
the registry's agents, their devices and the reloads)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.factories import payment
from testkit.servers import VictoriaMetricsServer, free_port, wait_until
from tests.deploy.conftest import (
    ACCOUNTS,
    DEPLOY,
    DEVICE_LISTENER,
    DEVICES,
    HEALTH_LISTENER,
    NOT_AUTHORIZED,
    SERVICE_PASSWORDS,
    SITE,
    TLS_LISTENER,
    Client,
    DeployBroker,
    agent_password,
    device_client,
    gateway_client,
    reads_nothing,
    run_entrypoint,
)
from tests.gateway.test_service import fetch, running_gateway
from tests.pki import make_authority
from wire.messages import encode
from wire.topics import alert_topic, device_subscription, device_topic

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
    [(None, None), (DEVICE_A, "wrong"), (DEVICE_A, DEVICE_B), ("gw1", None)],
    ids=["anonymous", "wrong-password", "another-devices-password", "no-password"],
)
def test_the_device_listener_refuses_clients_without_valid_credentials(
    deploy_broker: DeployBroker, clients: list[Client], username: str | None, password: str | None
) -> None:
    if password in DEVICES:
        password = agent_password(deploy_broker, password)
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
    assert connects(DEVICE_A, agent_password(deploy_broker, DEVICE_A))


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


def test_without_certificates_the_broker_has_no_tls_listener(deploy_broker: DeployBroker) -> None:
    assert deploy_broker.listeners == {DEVICE_LISTENER, HEALTH_LISTENER}


def test_with_certificates_an_agent_publishes_over_the_tls_listener(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    # docs/operations.md, "Devices": the certificates in the broker's certs dir, a restart
    deploy_broker.stop()
    authority = make_authority(deploy_broker.certs_dir, "broker")
    server = authority.issue(deploy_broker.certs_dir, "localhost", server=True)
    server.cert_file.rename(deploy_broker.certs_dir / "server.crt")
    server.key_file.rename(deploy_broker.certs_dir / "server.key")
    authority.cert_file.rename(deploy_broker.certs_dir / "ca.crt")
    run_entrypoint(deploy_broker, ACCOUNTS)
    deploy_broker.start()
    assert deploy_broker.listeners == {DEVICE_LISTENER, HEALTH_LISTENER, TLS_LISTENER}
    gateway = gateway_client(deploy_broker, clients)

    password = agent_password(deploy_broker, DEVICE_A)
    device = Client(
        deploy_broker.tls_port,
        username=DEVICE_A,
        password=password,
        ca_file=deploy_broker.certs_dir / "ca.crt",
    )
    clients.append(device)
    assert device.connected, device.connack
    topic = device_topic(SITE, DEVICE_A, "payment")
    assert not device.publish(topic, b"over tls").is_failure
    assert device.publish(device_topic(SITE, DEVICE_B, "payment"), b"x").value == NOT_AUTHORIZED
    wait_until(lambda: gateway.received() == [(topic, b"over tls")], 10, message="not routed")

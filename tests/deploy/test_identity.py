"""Client identities on the stack's broker (deploy/mosquitto on a real Mosquitto): no
account can take another's MQTT session, the healthcheck's account reads $SYS and
nothing else, and the broker has no anonymous listener. Also the demo's broker
(testkit.servers with accounts).

Mosquitto's default lets the newest connection with a client id win: it closes the
old one and resumes its session, queue included. These tests fail on a config that
does not bind client ids to usernames on every listener with accounts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testkit.servers import ManagedServer, MosquittoServer, wait_until
from tests.deploy.conftest import (
    DEVICES,
    HEALTH_PASSWORD,
    NOT_AUTHORIZED,
    SITE,
    Client,
    DeployBroker,
    device_client,
    gateway_client,
    reads_nothing,
)
from wire.topics import alert_topic, deadletter_topic, device_topic

pytestmark = pytest.mark.integration

DEVICE_A, DEVICE_B = DEVICES
GATEWAY_ID = "gw1"  # deploy/gateway.toml
QUEUED = 200


def still_connected(client: Client, topic: str) -> bool:
    """Whether ``client`` kept its connection until now: a PUBACK on it, and no
    disconnect. (Had the broker closed it, paho would report that before the PUBACK,
    which then could only come over a new connection.)"""
    client.publish(topic, b"still here")
    return client.disconnects == 0


# ------------------------------------------------------------- sessions and client ids


def test_a_device_claiming_a_gateways_client_id_does_not_displace_it(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(deploy_broker, clients, clean_start=False, session_expiry_s=3600)

    claimer = device_client(
        deploy_broker,
        clients,
        DEVICE_A,
        client_id=GATEWAY_ID,
        clean_start=False,
        session_expiry_s=3600,
    )

    assert claimer.session_present is False  # not the gateway's session
    assert still_connected(gateway, deadletter_topic(GATEWAY_ID))


@pytest.mark.parametrize("clean_start", [False, True], ids=["resume", "clean-start"])
def test_a_gateways_queue_survives_a_device_claiming_its_client_id(
    deploy_broker: DeployBroker, clients: list[Client], clean_start: bool
) -> None:
    # The gateway's persistent session queues what arrives while it is away.
    gateway = gateway_client(deploy_broker, clients, clean_start=False, session_expiry_s=3600)
    gateway.close()
    publisher = device_client(deploy_broker, clients, DEVICE_B)
    topic = device_topic(SITE, DEVICE_B, "payment")
    payloads = [f"event-{i}".encode() for i in range(QUEUED)]
    assert not any(code.is_failure for code in publisher.publish_all(topic, payloads))

    # A device with its own valid credentials asks for the gateway's client id.
    claimer = device_client(
        deploy_broker,
        clients,
        DEVICE_A,
        client_id=GATEWAY_ID,
        clean_start=clean_start,
        session_expiry_s=3600,
    )
    assert claimer.session_present is False
    claimer.close()

    back = gateway_client(deploy_broker, clients, clean_start=False, session_expiry_s=3600)
    assert back.session_present is True
    wait_until(
        lambda: len(back.received()) >= QUEUED,
        20,
        message=lambda: f"{len(back.received())} of {QUEUED} queued messages arrived",
    )
    assert sorted(payload for _, payload in back.received()) == sorted(payloads)
    assert claimer.received() == []


def test_a_device_cannot_take_another_devices_client_id(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    gateway = gateway_client(deploy_broker, clients)
    victim = device_client(deploy_broker, clients, DEVICE_A)

    claimer = device_client(deploy_broker, clients, DEVICE_B, client_id=DEVICE_A)

    assert still_connected(victim, device_topic(SITE, DEVICE_A, "status"))
    # The claimer is itself: it publishes under its own id, never under the other's.
    own = device_topic(SITE, DEVICE_B, "status")
    assert claimer.publish(device_topic(SITE, DEVICE_A, "status"), b"forged").value == (
        NOT_AUTHORIZED
    )
    assert not claimer.publish(own, b"own").is_failure
    wait_until(lambda: (own, b"own") in gateway.received(), 10, message="own message not routed")


# ------------------------------------------------------------------- the healthcheck


def health_client(broker: DeployBroker, clients: list[Client], port: int) -> Client:
    client = Client(port, username="health", password=HEALTH_PASSWORD)
    clients.append(client)
    return client


def test_the_health_listener_refuses_anonymous_clients(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    anonymous = Client(deploy_broker.health_port)
    clients.append(anonymous)
    assert anonymous.connack is not None
    assert anonymous.connack.value == NOT_AUTHORIZED, anonymous.connack


def test_the_health_account_reads_sys_and_nothing_else(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    health = health_client(deploy_broker, clients, deploy_broker.health_port)
    assert health.connected, health.connack

    health.subscribe("$SYS/broker/uptime")
    wait_until(health.received, 10, message="no $SYS/broker/uptime")
    assert {topic for topic, _ in health.received()} == {"$SYS/broker/uptime"}

    assert health.publish(alert_topic(SITE, "tamper"), b"{}").value == NOT_AUTHORIZED
    assert health.publish(device_topic(SITE, DEVICE_A, "payment"), b"x").value == NOT_AUTHORIZED

    spy = health_client(deploy_broker, clients, deploy_broker.health_port)
    spy.subscribe("#")
    gateway = gateway_client(deploy_broker, clients)
    device = device_client(deploy_broker, clients, DEVICE_A)
    assert reads_nothing(spy, device, device_topic(SITE, DEVICE_A, "payment"), gateway)


def test_the_health_account_exists_only_on_the_health_listener(
    deploy_broker: DeployBroker, clients: list[Client]
) -> None:
    on_device_listener = health_client(deploy_broker, clients, deploy_broker.port)
    assert on_device_listener.connack is not None
    assert on_device_listener.connack.value == NOT_AUTHORIZED, on_device_listener.connack


def test_the_compose_healthcheck_gets_the_uptime_as_the_health_account(
    deploy_broker: DeployBroker, resolved_compose: dict[str, Any]
) -> None:
    # docker-compose.yml's healthcheck as is, with the port the test broker listens on,
    # and the client config entrypoint.sh wrote ($XDG_CONFIG_HOME/mosquitto_sub)
    mosquitto = resolved_compose["services"]["mosquitto"]
    command: list[str] = mosquitto["healthcheck"]["test"]
    assert command[:2] == ["CMD", "mosquitto_sub"], command
    assert "-u" not in command and "-P" not in command, "no account on the command line"
    args = [arg.replace("$$", "$") for arg in command[2:]]  # compose's escaping undone
    args[args.index("-p") + 1] = str(deploy_broker.health_port)
    if shutil.which("mosquitto_sub") is None:
        pytest.fail("mosquitto_sub not found: apt-get install mosquitto-clients", pytrace=False)
    env = {"PATH": os.environ["PATH"], "XDG_CONFIG_HOME": str(deploy_broker.healthcheck_config_dir)}
    done = subprocess.run(
        ["mosquitto_sub", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no uptime printed"
    assert mosquitto["environment"]["XDG_CONFIG_HOME"], "the healthcheck needs its client config"


# ------------------------------------------------------- the demo's broker (make demo)


def test_the_demos_broker_takes_accounts_only_each_client_id_its_username(
    tmp_path: Path, _started_servers: list[ManagedServer], clients: list[Client]
) -> None:
    # as tillpulse.demo.local_stack starts it: the services' accounts and one per simulated
    # device, sharing the devices' password; no anonymous listener
    accounts = {"demo-gw": "gw-secret", "s0000-pos1": "devices", "s0000-pos2": "devices"}
    broker = MosquittoServer(tmp_path / "demo-broker", accounts=accounts)
    _started_servers.append(broker)
    broker.start()
    gateway = Client(broker.port, username="demo-gw", password="gw-secret", client_id="demo-gw")
    clients.append(gateway)
    assert gateway.connected, gateway.connack

    anonymous = Client(broker.port, client_id="demo-gw")
    clients.append(anonymous)
    assert anonymous.connack is not None and anonymous.connack.is_failure
    device = Client(broker.port, username="s0000-pos1", password="devices", client_id="demo-gw")
    clients.append(device)
    assert device.connected, device.connack
    other = Client(broker.port, username="s0000-pos2", password="devices", client_id="s0000-pos1")
    clients.append(other)
    assert other.connected, other.connack
    assert still_connected(gateway, "demo/sync") and still_connected(device, "demo/sync2")

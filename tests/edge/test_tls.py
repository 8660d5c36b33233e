"""Mutual TLS between the edge publisher and a real Mosquitto TLS listener."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from edge.config import EdgeMqttSection
from edge.outbox import Entry, Outbox, Priority
from edge.publisher import MqttPublisher
from runtime.deadletters import DeadLetters
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, ServerFactory, free_port, wait_until
from tests.pki import Authority, Issued, make_authority
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

SITE, DEVICE = "s0001", "s0001-pos1"


@dataclass(frozen=True)
class TlsBroker:
    server: MosquittoServer
    tls_port: int
    fleet_ca: Authority
    pki: Path


@pytest.fixture
def tls_broker(tmp_path: Path, mosquitto_factory: ServerFactory[MosquittoServer]) -> TlsBroker:
    pki = tmp_path / "pki"
    fleet_ca = make_authority(pki, "fleet")
    server_cert = fleet_ca.issue(pki, "broker", server=True)
    tls_port = free_port()
    server = mosquitto_factory(
        extra_config="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                f"cafile {fleet_ca.cert_file}",
                f"certfile {server_cert.cert_file}",
                f"keyfile {server_cert.key_file}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        )
    )
    return TlsBroker(server, tls_port, fleet_ca, pki)


def tls_publisher(tmp_path: Path, broker: TlsBroker, client: Issued) -> MqttPublisher:
    settings = {
        "host": "127.0.0.1",
        "port": broker.tls_port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.2,
        "tls": {
            "ca_file": str(broker.fleet_ca.cert_file),
            "cert_file": str(client.cert_file),
            "key_file": str(client.key_file),
        },
    }
    outbox = Outbox(tmp_path / "outbox.sqlite3", fsync_high_priority=False)
    topic = device_topic(SITE, DEVICE, Stream.PAYMENT)
    outbox.put_many([Entry(topic, b"hello", Priority.HIGH, DEVICE, 1)])
    return MqttPublisher(
        msgspec.convert(settings, EdgeMqttSection),
        site=SITE,
        device=DEVICE,
        outbox=outbox,
        deadletters=DeadLetters(tmp_path / "deadletters"),
    )


def run_until(publisher: MqttPublisher, condition: Callable[[], bool], what: str) -> None:
    """Run the publisher on its thread until ``condition`` holds (or fail after 20 s)."""
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(condition, 20, message=lambda: f"{what}: {publisher.status}")
    finally:
        stop.set()
        thread.join(10)


def test_agent_with_a_fleet_certificate_connects_and_delivers(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    device_cert = tls_broker.fleet_ca.issue(tls_broker.pki, DEVICE)
    publisher = tls_publisher(tmp_path, tls_broker, device_cert)
    with Collector(tls_broker.server.host, tls_broker.server.port, "tp/v1/dev/+/+/payment") as sub:
        run_until(publisher, lambda: publisher.status.acked == 1, "PUBACK over mutual TLS")
        sub.wait_for_count(1)
        assert [p for _, p, _ in sub.snapshot()] == [b"hello"]
    assert publisher.link.status.connects >= 1 and publisher.link.status.connect_failures == 0


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path, tls_broker: TlsBroker) -> None:
    rogue_ca = make_authority(tls_broker.pki / "rogue", "rogue")
    rogue_cert = rogue_ca.issue(tls_broker.pki / "rogue", DEVICE)
    publisher = tls_publisher(tmp_path, tls_broker, rogue_cert)
    run_until(publisher, lambda: publisher.link.status.connect_failures >= 2, "two refusals")
    assert publisher.link.status.connects == 0 and publisher.status.acked == 0
    # The broker ends the session on the unknown client certificate (its log says
    # "certificate verify failed"); the agent's status says where to look.
    assert publisher.link.status.last_error is not None
    assert "before CONNACK" in publisher.link.status.last_error

"""runtime.mqtt_link against the real Mosquitto: a link that keeps reconnecting says so."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runtime.config_sections import LinkSettings
from runtime.link_state import FLAPPING_CONNECTS
from runtime.mqtt_link import MqttLink
from testkit.servers import MosquittoServer, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def link(mosquitto: MosquittoServer) -> Iterator[MqttLink]:
    """A link kept up by its own thread, as the edge and the gateway run theirs."""
    settings = LinkSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        client_id="gw-flap",
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    link = MqttLink(settings)
    stop = threading.Event()
    runner = threading.Thread(target=keep_turning, args=(link, stop))
    runner.start()
    wait_until(lambda: link.status.connected, 10, message="link connected")
    yield link
    stop.set()
    runner.join(10)
    link.close()


def keep_turning(link: MqttLink, stop: threading.Event) -> None:
    while not stop.is_set():
        link.turn(stop)


def take_over(mosquitto: MosquittoServer, client_id: str) -> None:
    """Connect with ``client_id``: the broker drops whoever held it."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    wait_until(connected.is_set, 10, message="took the client id over")
    client.loop_stop()  # and stay silent: the link takes the id back


def test_a_link_that_keeps_reconnecting_reports_flapping(
    mosquitto: MosquittoServer, link: MqttLink
) -> None:
    assert link.flapping() is None
    for n in range(2, FLAPPING_CONNECTS + 2):
        take_over(mosquitto, "gw-flap")
        wait_until(lambda: link.status.connects == n, 10, message=f"reconnect {n}")  # noqa: B023
    reason = link.flapping()
    assert reason is not None and f"{FLAPPING_CONNECTS + 1} connects within 60s" in reason


def test_closing_the_link_is_not_reported_as_a_lost_broker(
    mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    link = MqttLink(LinkSettings(host=mosquitto.host, port=mosquitto.port, client_id="gw-close"))
    stop = threading.Event()
    wait_until(lambda: link.turn(stop), 10, message="link connected")
    with caplog.at_level("INFO", logger="runtime.link_state"):
        link.close()
    events = [record.getMessage() for record in caplog.records]
    assert "broker_disconnected" in events
    assert "broker_lost" not in events
    assert link.status.connected is False

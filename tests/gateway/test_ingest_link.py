"""gateway.broker_link against real Mosquitto: mutual TLS, keepalive, a frozen broker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.broker_link import BrokerLink
from gateway.ingest import Ingest
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from runtime.config_sections import LinkSettings, TlsFiles
from runtime.deadletters import DeadLetters
from testkit.mqtt_collector import publish_all
from testkit.servers import MosquittoServer, ServerFactory, free_port, wait_until
from tests.gateway.test_ingest import FIXED_PAST
from tests.gateway.test_service import payments
from tests.pki import Authority, make_authority
from tests.runtime.test_mqtt_link import take_over

pytestmark = pytest.mark.integration


@contextmanager
def turning(turn: Callable[[threading.Event], object]) -> Iterator[None]:
    """Call ``turn`` in a thread of its own, as the ingest does, until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            turn(stop)

    runner = threading.Thread(target=loop, daemon=True)
    runner.start()
    try:
        yield
    finally:
        stop.set()
        runner.join(10)


def test_the_ingest_over_mutual_tls_acks_all_and_a_foreign_certificate_is_refused(
    tmp_path: Path, mosquitto_factory: ServerFactory[MosquittoServer]
) -> None:
    pki = tmp_path / "pki"
    ours = make_authority(pki, "ours")
    server = ours.issue(pki, "broker", server=True)
    tls_port = free_port()
    broker = mosquitto_factory(
        extra_config="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                *(f"cafile {ours.cert_file}", f"certfile {server.cert_file}"),
                *(f"keyfile {server.key_file}", "require_certificate true"),
            ]
        )
    )

    def ingest(authority: Authority, spool: Spool, deadletters: DeadLetters) -> Ingest:
        client = authority.issue(pki, f"gw-{authority.cert_file.stem}")
        tls = TlsFiles(
            ca_file=str(ours.cert_file),
            cert_file=str(client.cert_file),
            key_file=str(client.key_file),
        )
        settings = LinkSettings(
            host="127.0.0.1",
            port=tls_port,
            client_id="gw1",
            tls=tls,
            receive_maximum=100,
            reconnect_min_s=0.05,
            reconnect_max_s=0.1,
        )
        pipeline = Pipeline("gw1", time.time_ns(), timestamps=FIXED_PAST)
        return Ingest(
            settings,
            password=None,
            gateway="gw1",
            shared_group=None,
            pipeline=pipeline,
            spool=spool,
            deadletters=deadletters,
        )

    with Spool(tmp_path / "spool") as spool:
        deadletters = DeadLetters(tmp_path / "deadletters")
        good = ingest(ours, spool, deadletters)
        with turning(good.run):  # run loops by itself; `turning` just stops it
            wait_until(lambda: good.link.status.connected, 10, message="TLS connect")
            publish_all(broker.host, broker.port, payments(2_000))
            wait_until(lambda: good.stats.acked == 2_000, 30, message=lambda: f"{good.stats}")
        foreign = ingest(make_authority(pki, "foreign"), spool, deadletters)
        with turning(foreign.link.turn):
            wait_until(lambda: foreign.link.status.connect_failures >= 2, 10, message="refused")
        deadletters.close()
    assert good.link.status.connects == 1 and spool.stats().appended_lines >= 2_000
    assert foreign.link.status.connects == 0
    assert "before CONNACK" in (foreign.link.status.last_error or "")


def test_keepalive_holds_an_idle_link_and_a_frozen_broker_is_a_lost_one(
    mosquitto: MosquittoServer,
) -> None:
    settings = LinkSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        client_id="gw-keepalive",
        keepalive_s=1,  # the broker drops a client silent for 1.5 keepalives
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    link = BrokerLink(settings, password=None, subscription="tp/v1/dev/+/+/+")
    with turning(link.turn):
        wait_until(lambda: link.status.connected, 10, message="connected")
        time.sleep(2.0)  # idle past 1.5 keepalives: only PINGREQs keep the session up
        assert (link.status.connects, link.status.last_error) == (1, None)
        assert mosquitto.pid is not None
        os.kill(mosquitto.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not link.status.connected, 5, message="frozen broker noticed")
        finally:
            os.kill(mosquitto.pid, signal.SIGCONT)
        assert "no PINGRESP within 1s" in (link.status.last_error or "")
        wait_until(lambda: link.status.connected, 10, message="reconnected")
    assert link.status.connects == 2


def test_a_session_taken_over_is_a_lost_link_and_taken_back(
    mosquitto: MosquittoServer,
) -> None:
    settings = LinkSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        client_id="gw-taken",
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    link = BrokerLink(settings, password=None, subscription="tp/v1/dev/+/+/+")
    with turning(link.turn):
        wait_until(lambda: link.status.connected, 10, message="connected")
        take_over(mosquitto, "gw-taken")
        wait_until(lambda: link.status.connects == 2, 10, message="took the session back")
    # Mosquitto 2.0.11 closes the socket without a DISCONNECT (measured)
    assert link.status.last_error == "ConnectionResetError: the broker closed the connection"
    assert link.flapping() is None  # two connects are no flapping

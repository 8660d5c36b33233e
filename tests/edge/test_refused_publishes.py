"""Publishes the broker refuses, against a real Mosquitto whose ACL refuses one device.

The agent publishes for the devices of its site. The broker's ACL lets it write
ALLOWED's topics (and its own), and refuses DENIED's with PUBACK 0x87 "Not
authorized", as it does for a device missing from the agent's registry entry. What
a user checks: the allowed device's messages all arrive, once; the refused rows end
in the dead letters, not in an ever-growing outbox; ``edge status`` says which
device, why and what to do, and exits 3 until the broker takes the device.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import edge.publisher
from edge import cli
from edge.agent import Agent
from edge.config import EdgeMqttSection, load_edge_config
from edge.outbox import Entry, Outbox, Priority
from edge.publisher import MAX_REFUSED_TRIES, MqttPublisher
from runtime.deadletters import DeadLetters
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, ServerFactory, wait_until
from tests.edge.test_publisher import Running
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

SITE = "s0001"
AGENT = "s0001-pi1"
ALLOWED = "s0001-pos1"
DENIED = "s0001-pos2"
DENIED_TOPIC = device_topic(SITE, DENIED, Stream.PAYMENT)
PAYMENTS = "tp/v1/dev/+/+/payment"


def write_acl(path: Path, *devices: str) -> None:
    """An ACL for anonymous clients (the agent and the test's subscriber): the agent
    may write its own topics and those of ``devices``; everyone may read."""
    path.write_text(
        "".join(f"topic write tp/v1/dev/{SITE}/{device}/#\n" for device in (AGENT, *devices))
        + "topic read tp/v1/dev/#\n"
    )


@pytest.fixture
def broker(mosquitto_factory: ServerFactory[MosquittoServer], tmp_path: Path) -> MosquittoServer:
    acl = tmp_path / "acl"
    write_acl(acl, ALLOWED)
    return mosquitto_factory(extra_config=f"acl_file {acl}")


@pytest.fixture
def deadletters(tmp_path: Path) -> Iterator[DeadLetters]:
    store = DeadLetters(tmp_path / "deadletters")
    yield store
    store.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite3", max_in_flight=20, fsync_high_priority=False) as box:
        yield box


def payment(device: str, seq: int, size: int = 0) -> Entry:
    body = f"{device}:{seq}".encode().ljust(size, b"p")
    return Entry(device_topic(SITE, device, Stream.PAYMENT), body, Priority.HIGH, device, seq)


def start_publisher(broker: MosquittoServer, outbox: Outbox, deadletters: DeadLetters) -> Running:
    settings = {
        "host": broker.host,
        "port": broker.port,
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,  # also the retries of refused rows: tried 3 times in ~0.2 s
        "reconnect_max_s": 0.2,
        "inflight_window": 20,
    }
    return Running(
        MqttPublisher(
            msgspec.convert(settings, EdgeMqttSection),
            site=SITE,
            device=AGENT,
            outbox=outbox,
            deadletters=deadletters,
        )
    )


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, object]]:
    return [
        record.tillpulse_kv  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "edge.publisher" and record.getMessage() == event
    ]


def test_a_refused_device_is_dead_lettered_while_the_allowed_one_flows(
    broker: MosquittoServer,
    outbox: Outbox,
    deadletters: DeadLetters,
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = 2_000  # of each device: 4,000 rows, 2,000 of them refused at every try
    caplog.set_level(logging.INFO, logger="edge.publisher")
    depths: list[int] = []
    with Collector(broker.host, broker.port, PAYMENTS) as sub:
        running = start_publisher(broker, outbox, deadletters)
        publisher = running.publisher
        try:
            for seq in range(count):  # ~1,000 pairs/s, interleaved as terminals send them
                outbox.put_many([payment(ALLOWED, seq), payment(DENIED, seq)])
                depths.append(outbox.stats().total_depth)
                running.stop.wait(0.001)
            wait_until(
                lambda: publisher.status.dead_lettered == count and outbox.stats().total_depth == 0,
                30,
                message=lambda: f"{publisher.status}, outbox {outbox.stats()}",
            )
            sub.wait_for_count(count)
        finally:
            running.close()
        arrived = sub.snapshot()

    # The allowed device: every message arrived, once, in order; nothing of the refused one.
    assert [payload for _, payload, _ in arrived] == [
        f"{ALLOWED}:{seq}".encode() for seq in range(count)
    ]
    # The outbox stayed bounded (185-253 rows at most here): refused rows leave it after
    # their tries; kept until a restart, as before, they would have reached 2,000.
    assert max(depths) < 500, f"outbox depth reached {max(depths)}"
    # Every refused row is in the dead letters, with its topic, device and reason.
    records = deadletters.read_all()
    assert sorted(record.payload for record in records) == sorted(
        f"{DENIED}:{seq}" for seq in range(count)
    )
    assert {record.source for record in records} == {DENIED_TOPIC}
    assert {record.reason for record in records} == {
        f"publish refused: Not authorized (code=0x87 tries={MAX_REFUSED_TRIES}/"
        f"{MAX_REFUSED_TRIES} device={DENIED})"
    }
    # Counted per device; the allowed device has no refusals.
    status = publisher.status
    assert status.refusals.keys() == {DENIED}
    denied = status.refusals[DENIED]
    assert (denied.refused, denied.dead_lettered) == (MAX_REFUSED_TRIES * count, count)
    assert (denied.last_reason, denied.last_code, denied.last_topic) == (
        "Not authorized",
        0x87,
        DENIED_TOPIC,
    )
    assert status.acked == count and status.published == (1 + MAX_REFUSED_TRIES) * count
    [reason] = publisher.degraded()
    assert f'device {DENIED} ("Not authorized" on {DENIED_TOPIC})' in reason
    assert f"agent {AGENT}'s [[agent]] entry" in reason and "tillpulse broker provision" in reason
    assert reason.endswith(
        f"{count} rows dead-lettered so far, kept in {deadletters.directory} and not sent again"
    )
    # One line per device and event, with topic, device and reason, not one per refusal.
    [refused] = logged(caplog, "publish_refused")
    assert refused["topic"] == DENIED_TOPIC and refused["device"] == DENIED
    assert refused["reason"] == "Not authorized" and refused["tries"] == f"1/{MAX_REFUSED_TRIES}"
    [dead] = logged(caplog, "publish_deadlettered")
    assert dead["topic"] == DENIED_TOPIC and dead["device"] == DENIED


def test_a_full_retry_queue_holds_new_rows_back_only_until_it_drains(
    broker: MosquittoServer,
    outbox: Outbox,
    deadletters: DeadLetters,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_REFUSED_WAITING refused rows waiting for a retry, nothing new is leased;
    the waiting rows are still retried and dead-lettered, so the allowed rows behind a
    backlog of refused ones are delivered, a few seconds later at worst."""
    monkeypatch.setattr(edge.publisher, "MAX_REFUSED_WAITING", 5)
    outbox.put_many([payment(DENIED, seq) for seq in range(200)])
    outbox.put_many([payment(ALLOWED, seq) for seq in range(200)])
    with Collector(broker.host, broker.port, PAYMENTS) as sub:
        running = start_publisher(broker, outbox, deadletters)
        try:
            sub.wait_for_count(200)
            wait_until(lambda: outbox.stats().total_depth == 0, 20, message="outbox not empty")
        finally:
            running.close()
        assert [payload for _, payload, _ in sub.snapshot()] == [
            f"{ALLOWED}:{seq}".encode() for seq in range(200)
        ]
    assert running.publisher.status.refusals[DENIED].dead_lettered == 200


def test_a_packet_over_the_brokers_limit_is_dead_lettered_unsent(
    mosquitto_factory: ServerFactory[MosquittoServer],
    outbox: Outbox,
    deadletters: DeadLetters,
) -> None:
    """Mosquitto drops the connection of a client that sends a packet over its
    max_packet_size, and paho sends it again after every reconnect: a loop, unless the
    row is never sent. The broker announces its limit in CONNACK."""
    broker = mosquitto_factory(extra_config="max_packet_size 1024")
    outbox.put_many([payment(ALLOWED, 0), payment(ALLOWED, 1, size=2_000), payment(ALLOWED, 2)])
    with Collector(broker.host, broker.port, PAYMENTS) as sub:
        running = start_publisher(broker, outbox, deadletters)
        try:
            sub.wait_for_count(2)
            wait_until(lambda: outbox.stats().total_depth == 0, 10, message="outbox not empty")
        finally:
            running.close()
        assert [payload for _, payload, _ in sub.snapshot()] == [b"s0001-pos1:0", b"s0001-pos1:2"]
    publisher = running.publisher
    assert publisher.link.status.connects == 1
    assert "oversize" not in broker.log_tail(since_start=True)
    [record] = deadletters.read_all()
    assert record.size == 2_000 and record.source == device_topic(SITE, ALLOWED, Stream.PAYMENT)
    assert record.reason.startswith("publish refused: a ")
    assert record.reason.endswith(
        f"exceeds the broker's 1024-byte limit (sent=never device={ALLOWED})"
    )
    allowed = publisher.status.refusals[ALLOWED]
    assert (allowed.refused, allowed.dead_lettered, allowed.last_code) == (0, 1, None)
    assert publisher.degraded() == []  # the device's later rows got through


def test_edge_status_names_the_refused_device_until_the_broker_takes_it(
    mosquitto_factory: ServerFactory[MosquittoServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acl = tmp_path / "acl"
    write_acl(acl, ALLOWED)
    broker = mosquitto_factory(extra_config=f"acl_file {acl}")
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT}"\nstate_dir = "{state}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive_s = 5\n'
        "reconnect_min_s = 0.05\nreconnect_max_s = 0.2\n[health]\ninterval_s = 3600\n"
    )
    agent = Agent(load_edge_config(config))
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()

    def status() -> tuple[int, str]:
        code = cli.main(["status", "--config", str(config)])
        return code, capsys.readouterr().out

    def degraded_status() -> str:
        code, shown = status()
        return shown if code == 3 and "dead_lettered=2 " in shown else ""

    try:
        agent.outbox.put_many([payment(DENIED, 0), payment(ALLOWED, 0), payment(DENIED, 1)])
        shown = wait_until(degraded_status, 20, message=lambda: "edge status:\n" + status()[1])
        lines = shown.splitlines()
        assert (
            f'refused    {DENIED} refused=6 dead_lettered=2 last="Not authorized"'
            f" topic={DENIED_TOPIC}"
        ) in lines
        [degraded] = [line for line in lines if line.startswith("DEGRADED")]
        assert degraded.startswith(
            f"DEGRADED   publish: the broker refuses publishes for device {DENIED}"
        )
        assert len(DeadLetters(state / "deadletters").read_all()) == 2
        assert cli.main(["status", "--config", str(config), "--json"]) == 3
        shown_json = msgspec.json.decode(capsys.readouterr().out)
        assert shown_json["publishing"]["refusals"][DENIED]["dead_lettered"] == 2

        # The fix: the broker takes the device (registry, provision, reload).
        write_acl(acl, ALLOWED, DENIED)
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGHUP)
        wait_until(lambda: "Reloading config" in broker.log_tail(since_start=True), 10)
        agent.outbox.put_many([payment(DENIED, 2)])
        wait_until(
            lambda: status()[0] == 0,
            20,
            message=lambda: "edge status:\n" + status()[1],
        )
        assert agent.publisher.status.refusals[DENIED].dead_lettered == 2  # not sent again
    finally:
        agent.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()

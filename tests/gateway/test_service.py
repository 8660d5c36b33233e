"""The whole gateway against real Mosquitto and influxd: MQTT in, InfluxDB out."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config import load_gateway_config
from gateway.service import Gateway
from testkit.factories import BASE_TS, payment
from testkit.mqtt_collector import Collector, publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, free_port, wait_until
from tests.conftest import SmallDisk
from tests.gateway import FIXED_PAST_MAX_AGE, Child, payment_counts
from wire.messages import encode
from wire.timestamps import NS_PER_DAY, NS_PER_MS, NS_PER_S
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

DB = "tillpulse"


def write_config(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    *,
    gateway_id: str = "gw1",
    shared_group: str | None = None,
    state_dir: Path | None = None,
    segment_bytes: int = 16 << 20,
    max_event_age: str | None = FIXED_PAST_MAX_AGE,
) -> Path:
    """A gateway's config; by default one that takes the fixed past times of `payments`
    (``max_event_age=None``: the default window)."""
    shared = f'shared_group = "{shared_group}"\n' if shared_group else ""
    window = f'[timestamps]\nmax_event_age = "{max_event_age}"\n' if max_event_age else ""
    config = tmp_path / f"{gateway_id}.toml"
    config.write_text(
        f"""
[gateway]
id = "{gateway_id}"
state_dir = "{state_dir or tmp_path / gateway_id}"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
keepalive_s = 5
{shared}[influxdb]
dialect = "v1"
url = "{influxdb.url}"
database = "{DB}"
[spool]
max_bytes = 268435456
segment_bytes = {segment_bytes}
[forwarder]
linger_ms = 20
[http]
listen = "127.0.0.1:{free_port()}"
{window}"""
    )
    return config


def payments(count: int, *, devices: int = 50, start: int = 0) -> list[tuple[str, bytes]]:
    """``count`` distinct payment events spread over ``devices`` terminals of 5 sites."""
    out = []
    for i in range(start, start + count):
        device = f"pos-{i % devices:03d}"
        site = f"store-{i % devices % 5}"
        message = payment(
            site=site,
            device=device,
            seq=i // devices,
            ts=BASE_TS + i * 1_000_000,
            txn_id=f"t{i}",
        )
        out.append((device_topic(site, device, Stream.PAYMENT), encode(message)))
    return out


@contextmanager
def running_gateway(config: Path) -> Iterator[Gateway]:
    gateway = Gateway(load_gateway_config(config))
    thread = threading.Thread(target=gateway.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: gateway.ingest.link.status.connected, 10, message="gateway connected")
        yield gateway
    finally:
        gateway.stop.set()
        thread.join(30)
        assert not thread.is_alive()


def landed(influxdb: InfluxDB1Server, expected: int, timeout: float = 60) -> tuple[int, int]:
    wait_until(
        lambda: payment_counts(influxdb, DB)[0] >= expected,
        timeout,
        message=lambda: f"{payment_counts(influxdb, DB)} of {expected} in InfluxDB",
    )
    return payment_counts(influxdb, DB)


def fetch(url: str) -> tuple[int, str]:
    """(status, body); 0 when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""


def test_every_event_lands_once_with_aggregates_and_self_metrics(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb)
    events = payments(5_000)
    with running_gateway(config) as gateway:
        publish_all(mosquitto.host, mosquitto.port, events)
        publish_all(mosquitto.host, mosquitto.port, events[:500])  # redelivered duplicates
        assert landed(influxdb, 5_000) == (5_000, 5_000)
        wait_until(lambda: gateway.ingest.stats.acked == 5_500, 30, message="all acked")
        host, port = gateway.http.address
        status, body = fetch(f"http://{host}:{port}/healthz")
        assert status == 200, body
        gateway.refresh_metrics()
        _, metrics = fetch(f"http://{host}:{port}/metrics")
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line[:1] != "#")
    assert samples['tillpulse_gateway_ingest_received_total{gateway="gw1"}'] == "5500"
    assert samples['tillpulse_gateway_ingest_acked_total{gateway="gw1"}'] == "5500"
    stats = gateway.pipeline.stats()
    assert stats.accepted["payment"] == 5_000 and stats.duplicates["payment"] == 500


@pytest.mark.parametrize(
    "hostile",
    [
        bytes(random.Random(1).randrange(256) for _ in range(300)),
        b'{"schema": "payment/1"' + b"[" * 50_000,
        b"x" * 20_000,
        b'{"schema":"payment/1","site":"store-0","device":"pos-000","ts":1,"seq":"7"}',
        b'{"schema":"payment/1","txn_id":"4111111111111111"}',
        b'{"schema":"payment/1","site":"store-0\\nevil f=1i 1","device":"pos-000"}',
    ],
    ids=["random-bytes", "deep-json", "huge", "wrong-type", "pan", "lp-injection"],
)
def test_hostile_payloads_go_to_dead_letters_and_good_traffic_flows(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server, hostile: bytes
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb)
    good = payments(300)
    topic = device_topic("store-0", "pos-000", Stream.PAYMENT)
    mixed = [item for pair in zip(good, [(topic, hostile)] * 300, strict=True) for item in pair]
    with (
        running_gateway(config) as gateway,
        Collector(mosquitto.host, mosquitto.port, "tp/v1/deadletter/#") as dead,
    ):
        publish_all(mosquitto.host, mosquitto.port, mixed)
        assert landed(influxdb, 300) == (300, 300)
        wait_until(
            lambda: sum(gateway.ingest.pipeline_stats.rejected.values()) == 300,
            10,
            message=lambda: f"rejected: {gateway.ingest.pipeline_stats.rejected}",
        )
        if b"4111111111111111" in hostile:
            assert gateway.deadletters.kept == 0 and dead.count() == 0  # never kept
        else:
            wait_until(lambda: dead.count() == 300, 10, message="dead-letter topic")
            assert gateway.deadletters.kept == 300
            reasons = {record.reason.split(":")[0] for record in gateway.deadletters.read_all()}
            assert reasons <= {"decode_error", "bad_topic", "id_mismatch"}
    measurements = influxdb.series_values("SHOW MEASUREMENTS", DB)
    assert {row[0] for row in measurements} <= {
        "payment",
        "payment_1m_device",
        "payment_1m_site",
        "decline_1m_site",
        "gateway_stats",
    }


def test_implausible_times_are_rejected_kept_and_counted_while_good_events_are_stored(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb, max_event_age=None)  # the defaults
    now = time.time_ns()
    unit = "looks like {}, ts is nanoseconds since the epoch (x{})"
    bad = {
        "ms": (now // NS_PER_MS, unit.format("milliseconds", "1,000,000")),
        "s": (now // NS_PER_S, unit.format("seconds", "1,000,000,000")),
        "us": (now // 1000, unit.format("microseconds", "1,000")),
        "old": (now - 31 * NS_PER_DAY, "31 days old, more than max_event_age 30d"),
        "ahead": (now + 70 * 60 * NS_PER_S, "in the future, beyond max_future_skew 1h"),
    }
    topic = device_topic("store-0", "pos-000", Stream.PAYMENT)
    rejects = [
        (topic, encode(payment(site="store-0", device="pos-000", ts=ts, seq=seq, txn_id=name)))
        for seq, (name, (ts, _)) in enumerate(bad.items())
    ]
    # An edge outbox replaying 29 days of outage is in the window, and so is the rest.
    good_times = [now - 29 * NS_PER_DAY, *(now - i * NS_PER_MS for i in range(99))]
    good = [
        (topic, encode(payment(site="store-0", device="pos-000", ts=ts, seq=9 + i, txn_id=f"g{i}")))
        for i, ts in enumerate(good_times)
    ]
    with running_gateway(config) as gateway:
        publish_all(mosquitto.host, mosquitto.port, [*good[:50], *rejects, *good[50:]])
        wait_until(lambda: gateway.ingest.stats.acked == 105, 30, message="all acked")
        assert landed(influxdb, 100) == (100, 100)
        wait_until(  # the ingest thread snapshots its pipeline's figures once a second
            lambda: gateway.ingest.pipeline_stats.rejected["implausible_time"] == 5,
            10,
            message=lambda: f"rejected: {gateway.ingest.pipeline_stats.rejected}",
        )
        gateway.refresh_metrics()
        metrics = gateway.metrics.render()
    stats = gateway.pipeline.stats()
    assert (stats.accepted["payment"], stats.rejected["implausible_time"]) == (100, 5)
    assert 'tillpulse_gateway_rejected_total{gateway="gw1",reason="implausible_time"} 5' in (
        metrics.splitlines()
    )
    kept = {json.loads(r.payload)["txn_id"]: r.reason for r in gateway.deadletters.read_all()}
    assert kept.keys() == bad.keys()
    for name, (ts, says) in bad.items():
        assert kept[name].startswith(f"implausible_time: ts {ts} "), kept[name]
        assert kept[name].endswith(says), kept[name]


def test_two_gateways_on_a_shared_subscription_write_every_event_exactly_once(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    one = write_config(tmp_path, mosquitto, influxdb, gateway_id="gw1", shared_group="gws")
    two = write_config(tmp_path, mosquitto, influxdb, gateway_id="gw2", shared_group="gws")
    with running_gateway(one) as first, running_gateway(two) as second:
        publish_all(mosquitto.host, mosquitto.port, payments(6_000))
        assert landed(influxdb, 6_000) == (6_000, 6_000)
        shares = [g.ingest.stats.received for g in (first, second)]
    assert sum(shares) == 6_000
    assert min(shares) > 1_000, shares  # both took a real share


@pytest.mark.slow
def test_gateway_killed_under_load_and_restarted_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb)
    events = payments(20_000)
    gateway = Child("gateway", "run", "--config", str(config))
    healthz = f"http://{load_gateway_config(config).http.listen}/healthz"
    # Publishing before the first gateway subscribed would route events to nobody.
    wait_until(lambda: fetch(healthz)[0] == 200, 30, message="gateway healthy")
    publisher = threading.Thread(
        target=publish_all, args=(mosquitto.host, mosquitto.port, events), daemon=True
    )
    publisher.start()
    wait_until(lambda: payment_counts(influxdb, DB)[0] > 2_000, 60, message="first writes")
    gateway.kill()
    assert publisher.is_alive(), "the kill must come mid-stream"
    restarted = Child("gateway", "run", "--config", str(config))
    try:
        publisher.join(120)
        assert landed(influxdb, 20_000, timeout=120) == (20_000, 20_000)
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        assert restarted.process.wait(30) == 0


def test_influxdb_outage_under_load_is_replayed_from_the_spool(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database(DB)
    config = write_config(tmp_path, mosquitto, influxdb)
    with running_gateway(config) as gateway:
        publish_all(mosquitto.host, mosquitto.port, payments(2_000))
        landed(influxdb, 2_000)
        influxdb.stop()
        publish_all(mosquitto.host, mosquitto.port, payments(8_000, start=2_000))
        wait_until(lambda: gateway.spool.stats().depth_lines >= 8_000, 30, message="spooled")
        wait_until(lambda: gateway.forwarder.stats().retries > 0, 30, message="retrying")
        assert gateway.forwarder.stats().last_error is not None
        influxdb.restart()
        assert landed(influxdb, 10_000, timeout=90) == (10_000, 10_000)


def health(url: str) -> dict[str, object]:
    status, body = fetch(url)
    return {"http": status, **(json.loads(body) if body else {})}


def stop(child: Child) -> int:
    """SIGTERM, then the exit code (SIGKILL if it hangs)."""
    child.process.send_signal(signal.SIGTERM)
    try:
        return child.process.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        raise


def test_a_gateway_started_on_a_full_disk_holds_back_then_recovers_alone(
    tmp_path: Path,
    small_disk_factory: Callable[..., SmallDisk],
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
) -> None:
    # Room for the group of ``receive_maximum`` (1000) messages held back meanwhile.
    small_disk = small_disk_factory(size_bytes=2 << 20)
    influxdb.create_database(DB)
    state_dir = small_disk.path / "gw1"
    config = write_config(tmp_path, mosquitto, influxdb, state_dir=state_dir)
    address = load_gateway_config(config).http.listen
    small_disk.fill()
    gateway = Child("gateway", "run", "--config", str(config))
    try:
        wait_until(
            lambda: health(f"http://{address}/healthz")["http"] == 200,
            30,
            message=lambda: f"gateway up (exit code {gateway.process.poll()})",
        )
        publish_all(mosquitto.host, mosquitto.port, payments(2_000))
        wait_until(
            lambda: "disk_full" in str(health(f"http://{address}/healthz").get("degraded")),
            30,
            message=lambda: f"degraded: {health(f'http://{address}/healthz')}",
        )
        state = health(f"http://{address}/healthz")
        assert (state["http"], state["status"]) == (200, "degraded")
        assert f"disk full under {state_dir / 'spool'}" in str(state["reason"])
        metric = 'tillpulse_gateway_degraded{gateway="gw1",reason="disk_full"} 1'
        wait_until(lambda: metric in fetch(f"http://{address}/metrics")[1], 10, message=metric)
        assert gateway.process.poll() is None
        assert payment_counts(influxdb, DB) == (0, 0)  # nothing acked, all in the broker

        small_disk.free()  # no restart: the gateway resumes by itself
        assert landed(influxdb, 2_000) == (2_000, 2_000)
        wait_until(
            lambda: health(f"http://{address}/healthz")["status"] == "ok",
            30,
            message=lambda: f"healthy again: {health(f'http://{address}/healthz')}",
        )
    finally:
        if gateway.process.poll() is None:
            assert stop(gateway) == 0
    assert gateway.process.returncode == 0

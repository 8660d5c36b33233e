"""The alert outputs against real servers: influxd, Mosquitto and a real HTTP endpoint."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from cloud.config import CloudMqttSection
from cloud.outputs.anomaly_points import AnomalyWriter
from cloud.outputs.delivery import OutputError
from cloud.outputs.fanout import AlertOutputs
from cloud.outputs.mqtt_alerts import AlertPublisher, AlertPublishError
from cloud.outputs.webhook import WebhookNotifier
from runtime.config_sections import LinkSettings, TlsFiles
from runtime.influx_sinks import V1Sink
from testkit.mqtt_collector import Collector
from testkit.servers import InfluxDB1Server, MosquittoServer, ServerFactory, free_port
from tests.pki import make_authority
from wire.messages import Alert, AlertStatus, Severity, decode_as
from wire.points import to_line

pytestmark = pytest.mark.integration

T0 = 1_795_593_600_000_000_000  # 2026-11-25T08:00:00Z


def alert(
    n: int,
    kind: str = "terminal_offline",
    *,
    site: str | None = "s1",
    device: str | None = "t1",
    acquirer: str | None = None,
    status: AlertStatus = AlertStatus.FIRING,
) -> Alert:
    return Alert(
        alert_id=f"{kind}.a{n}",
        ts=T0 + n * 300_000_000_000,
        type=kind,
        severity=Severity.CRITICAL,
        status=status,
        site=site,
        device=device,
        acquirer=acquirer,
        score=0.875,
        detector="health.offline",
        summary=f"no heartbeat for {n + 6} min, expected every 60 s",
    )


def unique_type() -> str:
    """An alert type of this test only: the session broker is shared."""
    return f"test_{uuid.uuid4().hex[:10]}"


def link_settings(
    host: str, port: int, client_id: str | None = None, tls: TlsFiles | None = None
) -> LinkSettings:
    """As `make_outputs` builds them from the ``[mqtt]`` section."""
    client_id = client_id or f"cloud-{uuid.uuid4().hex[:8]}"
    section = CloudMqttSection(host=host, port=port, client_id=client_id, tls=tls)
    return section.link_settings(section.client_id)


def publisher(broker: MosquittoServer, timeout_s: float = 10.0) -> AlertPublisher:
    return AlertPublisher(
        link_settings(*broker.address), connect_timeout_s=timeout_s, publish_timeout_s=timeout_s
    )


# -- InfluxDB ------------------------------------------------------------------------


def test_anomaly_points_land_with_their_tags_and_fields(influxdb_session: InfluxDB1Server) -> None:
    db = f"anomaly_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(db)
    alerts = [
        alert(0),
        alert(2, status=AlertStatus.RESOLVED),
        alert(1, "acquirer_outage", site=None, device=None, acquirer="acq1"),
    ]
    writer = AnomalyWriter(V1Sink(influxdb_session.url, db))
    assert writer.write(alerts) == 3
    assert writer.write(alerts) == 3  # a replay overwrites the same points
    writer.close()

    def point_time(a: Alert) -> int:  # the alert id picks the sub-millisecond slot
        return int(to_line(a).rsplit(" ", 1)[1])

    columns = "alert_id, score, summary, type, severity, status, detector, site, device, acquirer"
    rows = influxdb_session.series_values(f"SELECT {columns} FROM anomaly ORDER BY time", db)
    assert rows == [
        # a tag the alert has no value for (None) is not set on the point
        [
            point_time(a),
            a.alert_id,
            a.score,
            a.summary,
            a.type,
            a.severity,
            a.status,
            a.detector,
            a.site,
            a.device,
            a.acquirer,
        ]
        for a in sorted(alerts, key=point_time)
    ]
    tags = influxdb_session.series_values("SHOW TAG KEYS FROM anomaly", db)
    assert sorted(t for [t] in tags) == sorted(
        ["acquirer", "detector", "device", "severity", "site", "status", "type"]
    )
    fields = influxdb_session.series_values("SHOW FIELD KEYS FROM anomaly", db)
    assert sorted(fields) == [["alert_id", "string"], ["score", "float"], ["summary", "string"]]
    assert writer.stats.delivered == 6


def test_an_unreachable_influxdb_is_retried_then_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    writer = AnomalyWriter(V1Sink(url, "nowhere"), attempts=3, retry_initial_s=0.05)
    with pytest.raises(OutputError, match=r"1 anomaly points not written after 3 attempts"):
        writer.write([alert(0)])
    assert writer.stats.failures == 1


# -- MQTT ----------------------------------------------------------------------------


def test_alerts_arrive_on_their_topics_and_decode_back(mosquitto_session: MosquittoServer) -> None:
    kind = unique_type()
    alerts = [alert(0, kind), alert(1, kind, site=None, device=None, acquirer="acq1")]
    host, port = mosquitto_session.address
    with Collector(host, port, f"tp/v1/alerts/+/{kind}") as collector:
        out = publisher(mosquitto_session)
        assert out.publish(alerts) == 2
        collector.wait_for_count(2, timeout=10)
        out.close()
    received = sorted(collector.snapshot())
    assert [(topic, retained) for topic, _, retained in received] == [
        (f"tp/v1/alerts/_fleet/{kind}", False),
        (f"tp/v1/alerts/s1/{kind}", False),
    ]
    assert [decode_as(payload, Alert) for _, payload, _ in received] == alerts[::-1]
    assert (out.pending, out.stats.delivered) == ([], 2)


def test_a_stopped_broker_keeps_the_alerts_until_it_is_back(mosquitto: MosquittoServer) -> None:
    kind = unique_type()
    first, *later = (alert(n, kind) for n in range(3))
    out = publisher(mosquitto, timeout_s=2)
    assert out.publish([first]) == 1
    mosquitto.stop()
    started = time.monotonic()
    with pytest.raises(AlertPublishError, match="2 alerts kept for the next try") as failure:
        out.publish(later)
    assert time.monotonic() - started < 5
    assert failure.value.pending == later == out.pending
    mosquitto.start()
    with Collector(*mosquitto.address, f"tp/v1/alerts/+/{kind}") as collector:
        assert out.publish([]) == 2  # reconnects, sends what was pending
        collector.wait_for_count(2, timeout=10)
    out.close()
    assert [decode_as(p, Alert) for _, p, _ in collector.snapshot()] == later
    assert out.pending == []
    assert (out.stats.delivered, out.stats.failures) == (3, 1)


def test_alerts_a_run_could_not_publish_are_sent_by_the_next_run(
    mosquitto_session: MosquittoServer, tmp_path: Path
) -> None:
    kind = unique_type()
    alerts = [alert(n, kind) for n in range(2)]
    saved = tmp_path / "mqtt-pending.json"
    first_run = AlertPublisher(
        link_settings("127.0.0.1", free_port(), "cloud-once"), pending_path=saved
    )
    with pytest.raises(AlertPublishError, match="cannot connect"):
        first_run.publish(alerts)
    first_run.close()
    assert saved.exists()
    host, port = mosquitto_session.address
    next_run = AlertPublisher(link_settings(host, port, "cloud-once"), pending_path=saved)
    assert next_run.pending == alerts
    with Collector(host, port, f"tp/v1/alerts/+/{kind}") as collector:
        assert next_run.publish([]) == 2
        collector.wait_for_count(2, timeout=10)
    next_run.close()
    assert [decode_as(p, Alert) for _, p, _ in collector.snapshot()] == alerts
    assert not saved.exists()


def test_the_pending_queue_is_bounded_oldest_dropped() -> None:
    out = AlertPublisher(link_settings("127.0.0.1", free_port()), max_pending=2)
    alerts = [alert(n) for n in range(3)]
    with pytest.raises(AlertPublishError, match="cannot connect"):
        out.publish(alerts)
    with pytest.raises(AlertPublishError):
        out.publish(alerts[1:])  # handed back by the caller: not queued twice
    assert out.pending == alerts[1:]
    assert (out.stats.dropped, out.stats.failures) == (1, 2)
    out.close()


def test_alerts_go_over_mutual_tls(
    tmp_path: Path, mosquitto_factory: ServerFactory[MosquittoServer]
) -> None:
    ca = make_authority(tmp_path, "cloud")
    server, client = ca.issue(tmp_path, "broker", server=True), ca.issue(tmp_path, "detect")
    tls_port = free_port()
    broker = mosquitto_factory(
        extra_config="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                f"cafile {ca.cert_file}",
                f"certfile {server.cert_file}",
                f"keyfile {server.key_file}",
                "require_certificate true",
            ]
        )
    )
    tls = TlsFiles(
        ca_file=str(ca.cert_file), cert_file=str(client.cert_file), key_file=str(client.key_file)
    )
    out = AlertPublisher(link_settings("127.0.0.1", tls_port, "cloud-tls", tls))
    with Collector(*broker.address, "tp/v1/alerts/#") as collector:
        assert out.publish([alert(0)]) == 1
        collector.wait_for_count(1, timeout=10)
    out.close()
    assert collector.snapshot()[0][0] == "tp/v1/alerts/s1/terminal_offline"


def test_one_connection_is_kept_across_calls(mosquitto: MosquittoServer) -> None:
    kind = unique_type()
    out = AlertPublisher(link_settings(*mosquitto.address, "cloud-kept"))
    with Collector(*mosquitto.address, f"tp/v1/alerts/+/{kind}") as collector:
        assert out.publish([alert(0, kind)]) == 1
        assert out.publish([alert(1, kind)]) == 1
        collector.wait_for_count(2, timeout=10)
    out.close()
    log = mosquitto.log_tail(500, since_start=True)
    assert log.count("as cloud-kept") == 1, log  # "New client connected from ... as <id>"


def test_the_broker_account_comes_from_the_section(
    tmp_path: Path, mosquitto_factory: ServerFactory[MosquittoServer]
) -> None:
    broker = mosquitto_factory(accounts={"cloud": "s3cret"})
    (tmp_path / "right").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")

    def out(password_file: Path) -> AlertPublisher:
        section = CloudMqttSection(
            host=broker.host, port=broker.port, username="cloud", password_file=str(password_file)
        )
        return AlertPublisher(section.link_settings("cloud"), password=section.password())

    refused = out(tmp_path / "wrong")
    with pytest.raises(AlertPublishError, match="cannot connect: CONNACK"):
        refused.publish([alert(0)])
    refused.close()
    accepted = out(tmp_path / "right")
    assert accepted.publish(refused.pending) == 1  # acknowledged by the broker
    accepted.close()


def test_an_alert_over_the_brokers_packet_limit_is_refused_and_the_rest_sent(
    mosquitto_factory: ServerFactory[MosquittoServer],
) -> None:
    broker = mosquitto_factory(extra_config="max_packet_size 2048")
    kind = unique_type()
    small = alert(0, kind)
    large = msgspec.structs.replace(alert(1, kind), summary="x" * 4000)
    out = AlertPublisher(link_settings(*broker.address, "cloud-limited"))
    with Collector(*broker.address, f"tp/v1/alerts/+/{kind}") as collector:
        assert out.publish([large, small]) == 1
        collector.wait_for_count(1, timeout=10)
        assert out.publish([alert(2, kind)]) == 1  # the connection was not lost over it
        collector.wait_for_count(2, timeout=10)
    out.close()
    assert (out.pending, out.stats.refused, out.stats.failures) == ([], 1, 0)
    log = broker.log_tail(500, since_start=True)
    assert log.count("as cloud-limited") == 1, log  # "New client connected from ... as <id>"


# -- webhook -------------------------------------------------------------------------


class Endpoint:
    """A real HTTP server that records POSTs and answers with scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append((dict(self.headers), body))
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


def test_a_5xx_is_retried_and_the_alert_delivered(endpoint: Endpoint, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    endpoint.statuses = [500]
    hook = WebhookNotifier(endpoint.url, token_file=str(token), retry_initial_s=0.05)
    assert hook.send([alert(0)]) == 1
    hook.close()
    assert len(endpoint.requests) == 2
    for headers, body in endpoint.requests:
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/json"
        assert decode_as(body, Alert) == alert(0)


def test_a_4xx_is_counted_and_the_rest_still_sent(endpoint: Endpoint) -> None:
    endpoint.statuses = [400]
    hook = WebhookNotifier(endpoint.url)
    assert hook.send([alert(0), alert(1)]) == 1
    assert (hook.stats.refused, hook.stats.delivered, len(endpoint.requests)) == (1, 1, 2)
    assert "Authorization" not in endpoint.requests[0][0]


def test_an_endpoint_that_stays_down_is_a_bounded_clear_error() -> None:
    hook = WebhookNotifier(f"http://127.0.0.1:{free_port()}/x", attempts=3, retry_initial_s=0.05)
    started = time.monotonic()
    with pytest.raises(OutputError, match=r"not delivered after 3 attempts.*; 2 alerts not sent"):
        hook.send([alert(0), alert(1)])
    assert time.monotonic() - started < 3


# -- all of them ---------------------------------------------------------------------


def test_one_failing_output_does_not_stop_the_others(
    mosquitto_session: MosquittoServer, endpoint: Endpoint
) -> None:
    kind = unique_type()
    down = V1Sink(f"http://127.0.0.1:{free_port()}", "nowhere")
    outputs = AlertOutputs(
        influxdb=AnomalyWriter(down, attempts=1),
        mqtt=publisher(mosquitto_session),
        webhook=WebhookNotifier(endpoint.url),
    )
    with Collector(*mosquitto_session.address, f"tp/v1/alerts/+/{kind}") as collector:
        reports = outputs.emit([alert(0, kind), alert(1, kind)])
        collector.wait_for_count(2, timeout=10)
    outputs.close()
    assert reports["influxdb"].delivered == 0
    assert "anomaly points not written" in (reports["influxdb"].error or "")
    assert (reports["mqtt"].delivered, reports["mqtt"].error) == (2, None)
    assert (reports["webhook"].delivered, reports["webhook"].error) == (2, None)
    assert len(endpoint.requests) == 2

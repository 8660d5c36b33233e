"""The v1 sink against a real influxd 1.6: writes, bad points, 413, auth, outages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.influx_sinks import V1Sink
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from testkit.factories import payment_lines
from testkit.servers import InfluxDB1Server, ServerFactory, free_port
from tests.gateway import payment_counts, type_conflicts

pytestmark = pytest.mark.integration

MAX_BODY = 20_000


class SmallBodyInfluxDB(InfluxDB1Server):
    """influxd that answers 413 to write bodies over MAX_BODY bytes."""

    def config_text(self) -> str:
        return super().config_text().replace("[http]\n", f"[http]\n  max-body-size = {MAX_BODY}\n")


def test_lines_land_exactly(influxdb: InfluxDB1Server) -> None:
    influxdb.create_database("gw")
    sink = V1Sink(influxdb.url, "gw")
    result = sink.write(payment_lines(2_000))
    assert (result.written, result.rejected, result.requests) == (2_000, [], 1)
    assert result.latency_s > 0
    assert payment_counts(influxdb, "gw") == (2_000, 2_000)


@pytest.fixture
def typed_sink(influxdb: InfluxDB1Server) -> Iterator[V1Sink]:
    """A sink to database gw, where amount_minor is already an integer field."""
    influxdb.create_database("gw")
    with V1Sink(influxdb.url, "gw") as sink:
        sink.write(payment_lines(1))
        yield sink


def test_type_conflicts_are_rejected_with_the_reason_and_the_rest_lands(
    influxdb: InfluxDB1Server, typed_sink: V1Sink
) -> None:
    lines, bad = type_conflicts(payment_lines(500, start=1), every=50)
    result = typed_sink.write(lines)
    assert result.written == 490
    assert {r.line for r in result.rejected} == bad
    assert all("field type conflict" in r.reason for r in result.rejected)
    assert all(r.reason.startswith("HTTP 400: partial write") for r in result.rejected)
    assert payment_counts(influxdb, "gw") == (491, 491)


def test_a_batch_influxdb_dropped_whole_is_rejected_in_one_request(typed_sink: V1Sink) -> None:
    lines, bad = type_conflicts(payment_lines(300, start=1), every=1)  # a field changed type
    result = typed_sink.write(lines)
    assert (result.written, result.requests) == (0, 1)
    assert {r.line for r in result.rejected} == bad and len(bad) == 300
    assert result.rejected[0].reason.endswith("dropped=300")


def test_too_large_bodies_are_split(tmp_path: Path) -> None:
    with SmallBodyInfluxDB(tmp_path / "influxdb") as server:
        server.create_database("gw")
        sink = V1Sink(server.url, "gw")
        lines = payment_lines(1_000)  # ~270 kB
        result = sink.write(lines)
        assert (result.written, result.rejected) == (1_000, [])
        assert result.splits >= 15
        assert payment_counts(server, "gw") == (1_000, 1_000)
        huge = b'payment,device=pos-x txn_id="%s" 1' % (b"x" * MAX_BODY)
        assert [r.reason for r in sink.write([huge]).rejected] == [
            "HTTP 413: Request Entity Too Large"
        ]


def test_auth_and_missing_database_are_config_errors(
    influxdb_factory: ServerFactory[InfluxDB1Server],
) -> None:
    server = influxdb_factory(auth=True)
    server.create_database("gw")
    with pytest.raises(SinkConfigError, match="HTTP 401") as caught:
        V1Sink(server.url, "gw").write(payment_lines(1))
    assert caught.value.status == 401
    with pytest.raises(SinkConfigError, match="HTTP 401"):
        V1Sink(server.url, "gw", username="admin", password="wrong").write(payment_lines(1))
    with pytest.raises(SinkConfigError, match='HTTP 404: database not found: "nope"'):
        V1Sink(
            server.url, "nope", username=server.admin_user, password=server.admin_password
        ).write(payment_lines(1))
    ok = V1Sink(server.url, "gw", username=server.admin_user, password=server.admin_password)
    assert ok.write(payment_lines(3)).written == 3


def test_no_server_is_retriable() -> None:
    with pytest.raises(SinkRetriableError, match="refused"):
        V1Sink(f"http://127.0.0.1:{free_port()}", "gw", timeout_s=2).write([b"m v=1i 1"])

"""The v2 sink (influxdb-client) against VictoriaMetrics' /api/v2/write."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.influx_sinks import V2Sink
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from testkit.factories import BASE_TS, payment_lines
from testkit.servers import VictoriaMetricsServer, free_port

pytestmark = pytest.mark.integration


def test_lines_are_written_and_read_back(victoriametrics: VictoriaMetricsServer) -> None:
    lines = payment_lines(300)
    with V2Sink(victoriametrics.url, token="unused", org="tillpulse", bucket="tillpulse") as sink:
        result = sink.write(lines)
    assert (result.written, result.rejected, result.requests) == (300, [], 1)

    def all_there(rows: list[dict[str, Any]]) -> bool:
        return sum(len(row["values"]) for row in rows) == 300

    rows = victoriametrics.wait_for_export('{__name__="payment_amount_minor"}', all_there)
    stamps = sorted(ts for row in rows for ts in row["timestamps"])
    assert stamps == [BASE_TS // 1_000_000 + i for i in range(300)]  # ms, one per payment
    written = {int(line.split(b"amount_minor=")[1].split(b"i")[0]) for line in lines}
    assert {int(v) for row in rows for v in row["values"]} == written


def test_a_wrong_path_is_a_config_error_not_dead_letters(
    victoriametrics: VictoriaMetricsServer,
) -> None:
    url = f"{victoriametrics.url}/wrong-prefix"  # VictoriaMetrics answers 400, not 404
    with (
        V2Sink(url, token="t", org="o", bucket="b") as sink,
        pytest.raises(SinkConfigError, match="unsupported path"),
    ):
        sink.write(payment_lines(10))


def test_no_server_is_retriable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        V2Sink(url, token="t", org="o", bucket="b", timeout_s=2) as sink,
        pytest.raises(SinkRetriableError, match="refused"),
    ):
        sink.write([b"m v=1i 1"])

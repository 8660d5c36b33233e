import dataclasses
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from gateway.gaps import DeviceGaps
from gateway.metrics import CONTENT_TYPE, Degraded, GatewayMetrics, Health, MetricsServer
from gateway.pipeline import Pipeline
from testkit.factories import TS, payment
from tests.gateway.test_aggregates import parse_line
from wire import messages as m
from wire.topics import device_topic

TOPIC = device_topic("store-1", "pos-1", "payment")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r"\A([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|\Z)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda match: "\n" if match[1] == "n" else match[1], value)


def parse_exposition(text: str) -> tuple[dict[str, str], Samples]:
    """Prometheus text format 0.0.4 back into ({name: type}, {(name, labels): value})."""
    types: dict[str, str] = {}
    samples: Samples = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in types, f"HELP, then TYPE once: {name}"
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name in types, f"sample before its TYPE: {line!r}"
            pairs = _LABEL.findall(labels or "")
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), line
            key = (name, frozenset((k, _unescape(v)) for k, v in pairs))
            assert key not in samples, f"duplicate sample: {line!r}"
            samples[key] = float(value)
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"gateway": "gw1", **labels}.items()))]


def busy_pipeline() -> Pipeline:
    p = Pipeline("gw1", TS)
    for seq in (1, 2, 2, 5):
        p.process(TOPIC, m.encode(payment(seq=seq)), TS)
    p.process("nope", b"x", TS)
    p.process(TOPIC, b"{", TS)
    return p


@dataclasses.dataclass
class FakeSpoolStats:
    depth_lines: int
    disk_bytes: int
    oldest_age_s: float | None
    appends: int
    writable: bool
    last_error: str | None


def metrics() -> GatewayMetrics:
    gm = GatewayMetrics("gw1")
    gm.update_pipeline(busy_pipeline().stats())
    gm.report("spool", FakeSpoolStats(12, 4096, 1.5, 7, True, "x"), counters={"appends"})
    gm.report("forwarder", {"write_latency_p99_s": 0.25, "lag_s": None}, counters=())
    return gm


def test_exposition_carries_every_figure_with_types() -> None:
    types, samples = parse_exposition(metrics().render())
    assert (
        value(samples, "tillpulse_gateway_messages_total", stream="payment", outcome="accepted")
        == 3
    )
    assert (
        value(samples, "tillpulse_gateway_messages_total", stream="payment", outcome="duplicate")
        == 1
    )
    assert (
        value(samples, "tillpulse_gateway_messages_total", stream="status", outcome="accepted") == 0
    )
    assert value(samples, "tillpulse_gateway_rejected_total", reason="bad_topic") == 1
    assert value(samples, "tillpulse_gateway_rejected_total", reason="decode_error") == 1
    assert value(samples, "tillpulse_gateway_rejected_total", reason="pan_detected") == 0
    assert value(samples, "tillpulse_gateway_dedup_duplicates_total") == 1
    assert value(samples, "tillpulse_gateway_dedup_entries") == 3
    assert value(samples, "tillpulse_gateway_gaps_missing_total") == 2
    assert value(samples, "tillpulse_gateway_gaps_outstanding") == 2
    assert (
        value(
            samples,
            "tillpulse_gateway_gaps_device_missing",
            site="store-1",
            device="pos-1",
            stream="payment",
        )
        == 2
    )
    assert value(samples, "tillpulse_gateway_aggregates_late_events_total") == 0
    assert value(samples, "tillpulse_gateway_aggregates_open_windows") == 1
    assert value(samples, "tillpulse_gateway_spool_depth_lines") == 12
    assert value(samples, "tillpulse_gateway_spool_oldest_age_s") == 1.5
    assert value(samples, "tillpulse_gateway_spool_appends_total") == 7
    assert value(samples, "tillpulse_gateway_spool_writable") == 1
    assert value(samples, "tillpulse_gateway_forwarder_write_latency_p99_s") == 0.25
    assert "tillpulse_gateway_spool_last_error" not in types  # strings are left out
    assert "tillpulse_gateway_forwarder_lag_s" not in types  # None: not known yet
    assert types["tillpulse_gateway_messages_total"] == "counter"
    assert types["tillpulse_gateway_spool_depth_lines"] == "gauge"
    assert types["tillpulse_gateway_aggregates_watermark_ns"] == "gauge"
    assert all(kind == "counter" for name, kind in types.items() if name.endswith("_total"))
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")


def test_label_values_and_help_are_escaped() -> None:
    gm = GatewayMetrics("gw1")
    stats = busy_pipeline().stats()
    assert stats.gaps is not None
    hostile = 'a"b\\c\nd},x="1'
    gaps = dataclasses.replace(stats.gaps, top=[DeviceGaps(hostile, "pos-1", "payment", 9, 0, 0)])
    gm.update_pipeline(dataclasses.replace(stats, gaps=gaps))
    _, samples = parse_exposition(gm.render())
    assert (
        value(
            samples,
            "tillpulse_gateway_gaps_device_missing",
            site=hostile,
            device="pos-1",
            stream="payment",
        )
        == 9
    )


def test_reporting_again_replaces_a_component() -> None:
    gm = metrics()
    gm.report("spool", {"depth_lines": 1})
    types, samples = parse_exposition(gm.render())
    assert value(samples, "tillpulse_gateway_spool_depth_lines") == 1
    assert "tillpulse_gateway_spool_disk_bytes" not in types


def test_bad_figures_are_refused() -> None:
    gm = GatewayMetrics("gw1")
    with pytest.raises(ValueError, match="metric name"):
        gm.report("spool", {"depth lines": 1})
    with pytest.raises(ValueError, match="taken by the pipeline"):
        gm.report("dedup", {"entries": 1})
    with pytest.raises(TypeError, match="dataclass, Struct or mapping"):
        gm.report("spool", [1, 2])


def test_the_stats_point_carries_the_same_figures_as_floats() -> None:
    measurement, tags, fields, ts = parse_line(metrics().stats_line(TS))
    assert (measurement, tags, ts) == ("gateway_stats", {"gateway": "gw1"}, TS)
    assert fields["messages_payment_accepted"] == 3
    assert fields["rejected_bad_topic"] == 1
    assert fields["spool_depth_lines"] == 12
    assert fields["forwarder_write_latency_p99_s"] == 0.25
    assert not any(key.startswith("gaps_device_missing") for key in fields)
    body = metrics().stats_line(TS).split(" ")[1]
    assert not re.search(r"=[0-9-]+i(,|$)", body)  # no integer fields: types never change


def test_an_empty_registry_still_writes_a_valid_point() -> None:
    assert parse_line(GatewayMetrics("gw1").stats_line(TS))[2] == {"up": 1.0}


class HealthSwitch:
    def __init__(self) -> None:
        self.state = Health(ok=True, details={"spool_depth_lines": 3})

    def __call__(self) -> Health:
        return self.state


@pytest.fixture
def server() -> Iterator[tuple[str, HealthSwitch]]:
    health = HealthSwitch()
    srv = MetricsServer(metrics(), ("127.0.0.1", 0), health)
    srv.start()
    host, port = srv.address
    try:
        yield f"http://{host}:{port}", health
    finally:
        srv.stop()


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_http_serves_metrics(server: tuple[str, HealthSwitch]) -> None:
    status, content_type, body = fetch(server[0] + "/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE)
    _, samples = parse_exposition(body)
    assert value(samples, "tillpulse_gateway_spool_depth_lines") == 12


def test_http_health_is_200_when_healthy_and_503_with_the_reason(
    server: tuple[str, HealthSwitch],
) -> None:
    url, health = server
    status, content_type, body = fetch(url + "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "spool_depth_lines": 3}
    health.state = Health(ok=False, reason="InfluxDB unreachable for 120 s")
    status, _, body = fetch(url + "/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "unhealthy", "reason": "InfluxDB unreachable for 120 s"}


def test_http_health_is_200_when_degraded_with_every_reason(
    server: tuple[str, HealthSwitch],
) -> None:
    url, health = server
    health.state = Health(
        ok=True,
        degraded={
            Degraded.DISK_FULL: "disk full under /var/spool",
            Degraded.CURSOR_NOT_PERSISTED: "cursor not persisted",
        },
    )
    status, _, body = fetch(url + "/healthz")
    assert status == 200  # a liveness probe must not restart what recovers alone
    assert json.loads(body) == {
        "status": "degraded",
        "reason": "disk full under /var/spool; cursor not persisted",
        "degraded": {
            "disk_full": "disk full under /var/spool",
            "cursor_not_persisted": "cursor not persisted",
        },
    }


def test_degraded_reasons_are_gauges_of_every_known_reason() -> None:
    registry = GatewayMetrics("gw1")
    registry.update_health(Health(ok=True, degraded={Degraded.DISK_FULL: "disk full"}))
    _, samples = parse_exposition(registry.render())
    assert value(samples, "tillpulse_gateway_health_ok") == 1
    assert {
        reason: value(samples, "tillpulse_gateway_degraded", reason=reason)
        for reason in ("disk_full", "spool_at_max_bytes", "cursor_not_persisted")
    } == {"disk_full": 1, "spool_at_max_bytes": 0, "cursor_not_persisted": 0}


def test_http_unknown_paths_are_404(server: tuple[str, HealthSwitch]) -> None:
    assert fetch(server[0] + "/admin")[0] == 404

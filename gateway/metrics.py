"""The gateway's self-metrics: Prometheus text at /metrics, /healthz, and `gateway_stats`.

The ingest loop feeds figures in; HTTP requests and the stats point read them:

    metrics = GatewayMetrics("gw1")
    metrics.update_pipeline(pipeline.stats())                 # once a second
    metrics.report("spool", spool.stats(), counters={"appends", "fsyncs"})
    metrics.report("forwarder", forwarder.stats(), counters={"batches", "retries"})
    metrics.report("deadletters", {"kept": dl.kept, "evicted": dl.evicted},
                   counters={"kept", "evicted"})
    metrics.update_health(health())                           # degraded{reason=...}
    spool.append([metrics.stats_line(time.time_ns()).encode()])   # now and then
    server = MetricsServer(metrics, ("127.0.0.1", 9464), health); server.start()

/healthz answers 200 ``{"status": "ok"}``; 200 ``{"status": "degraded", "reason":
..., "degraded": {code: why}}`` while the gateway works around a fault by
itself (full disk, spool at its bound, ...: it keeps draining and resumes
alone, so a liveness probe must not restart it, which would not free a byte);
and 503 ``{"status": "unhealthy", "reason": ...}`` when it cannot go on
(a worker stopped, the broker unreachable, writes far behind).

`report` takes any dataclass or mapping of numbers: each numeric field
becomes ``tillpulse_gateway_<component>_<field>`` (``_total`` appended for the
names in ``counters``, which are Prometheus counters; the rest are gauges);
booleans are 0/1, None and strings are left out. Every sample carries a
``gateway`` label. Reporting a component again replaces its figures.

`stats_line` writes the same figures as one ``gateway_stats`` point (tag
``gateway``), every field a float (so a field never changes type between
points), labelled samples as ``<name>_<label values>`` (e.g.
``messages_payment_accepted``); the per-device top offenders stay out of it.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal

import msgspec

from gateway.errors import StartError
from gateway.pipeline import PipelineStats
from runtime.logs import kv
from wire.lineproto import FieldValue, encode_point

log = logging.getLogger(__name__)

PREFIX: Final = "tillpulse_gateway_"
STATS_MEASUREMENT: Final = "gateway_stats"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_NAME: Final = re.compile(r"\A[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_NAMES: Final = frozenset(
    {"pipeline", "messages", "rejected", "dedup", "gaps", "aggregates", "health"}
)
_DEDUP_COUNTERS: Final = frozenset({"duplicates", "reused", "evicted"})
_GAP_GAUGES: Final = frozenset({"devices", "outstanding"})
_AGGREGATE_GAUGES: Final = frozenset({"watermark_ns", "open_windows", "open_keys", "open_values"})


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: a name (without the prefix), its type, help, and labelled values."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: list[tuple[dict[str, str], float]]
    in_stats_point: bool = True


class Degraded(enum.StrEnum):
    """Why a working gateway is not all well; each is a ``degraded{reason=...}`` gauge."""

    DISK_FULL = "disk_full"  # the spool's disk refuses appends: acks held back
    SPOOL_AT_MAX_BYTES = "spool_at_max_bytes"  # the spool's bound: acks held back
    CURSOR_NOT_PERSISTED = "cursor_not_persisted"  # a restart would replay lines
    DEADLETTERS_NOT_WRITABLE = "deadletters_not_writable"  # rejections counted, not kept
    MQTT_RECONNECTING = "mqtt_reconnecting"  # the link keeps dropping


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str = ""  # why not ok
    details: dict[str, Any] = field(default_factory=dict)
    degraded: dict[Degraded, str] = field(default_factory=dict)  # ok, but: why

    @property
    def status(self) -> str:
        if not self.ok:
            return "unhealthy"
        return "degraded" if self.degraded else "ok"


class GatewayMetrics:
    """The latest figures of every component; safe to update and read from any thread."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self._lock = threading.Lock()
        self._components: dict[str, list[Family]] = {}

    def update_pipeline(self, stats: PipelineStats) -> None:
        families = [
            Family(
                "messages",
                "counter",
                "Device messages processed, by stream and outcome (accepted, duplicate).",
                [
                    ({"stream": stream, "outcome": outcome}, n)
                    for outcome, counts in (
                        ("accepted", stats.accepted),
                        ("duplicate", stats.duplicates),
                    )
                    for stream, n in counts.items()
                ],
            ),
            Family(
                "rejected",
                "counter",
                "Messages rejected, by reason (all but pan_detected are dead-lettered).",
                [({"reason": reason}, n) for reason, n in stats.rejected.items()],
            ),
            *_families("dedup", stats.dedup, _DEDUP_COUNTERS),
            *_families("aggregates", stats.aggregates, None, gauges=_AGGREGATE_GAUGES),
        ]
        if stats.gaps is not None:
            families += _families("gaps", stats.gaps, None, gauges=_GAP_GAUGES)
            families.append(
                Family(
                    "gaps_device_missing",
                    "gauge",
                    "Missing sequence numbers of the device streams with the most.",
                    [
                        ({"site": d.site, "device": d.device, "stream": d.stream}, d.missing)
                        for d in stats.gaps.top
                    ],
                    in_stats_point=False,
                )
            )
        with self._lock:
            self._components["pipeline"] = families

    def update_health(self, health: Health) -> None:
        """``health_ok`` and one ``degraded`` gauge per `Degraded` reason (0 or 1)."""
        families = [
            Family("health_ok", "gauge", "1 when /healthz answers 200.", [({}, int(health.ok))]),
            Family(
                "degraded",
                "gauge",
                "1 while the gateway works around this fault by itself.",
                [({"reason": code.value}, int(code in health.degraded)) for code in Degraded],
            ),
        ]
        with self._lock:
            self._components["health"] = families

    def report(self, component: str, figures: object, *, counters: Collection[str] = ()) -> None:
        """Replace ``component``'s figures (a dataclass or a mapping of numbers)."""
        if component in _RESERVED_NAMES:
            raise ValueError(
                f"component name {component!r} is taken by the pipeline's or the health figures"
            )
        families = _families(component, figures, counters)
        with self._lock:
            self._components[component] = families

    def families(self) -> list[Family]:
        with self._lock:
            return [family for families in self._components.values() for family in families]

    def render(self) -> str:
        """Every figure in the Prometheus text exposition format (version 0.0.4)."""
        gateway = _label_value(self.gateway)
        out: list[str] = []
        for family in self.families():
            name = PREFIX + family.name + ("_total" if family.kind == "counter" else "")
            out.append(f"# HELP {name} {_help(family.help)}")
            out.append(f"# TYPE {name} {family.kind}")
            for labels, value in family.samples:
                pairs = "".join(f',{key}="{_label_value(v)}"' for key, v in labels.items())
                out.append(f'{name}{{gateway="{gateway}"{pairs}}} {_number(value)}')
        return "\n".join(out) + "\n"

    def stats_line(self, now_ns: int) -> str:
        """The same figures as one ``gateway_stats`` line-protocol point."""
        fields: dict[str, FieldValue] = {}
        for family in self.families():
            if not family.in_stats_point:
                continue
            for labels, value in family.samples:
                key = "_".join([family.name, *labels.values()])
                if math.isfinite(value):
                    fields[key] = float(value)
        if not fields:
            fields["up"] = 1.0
        return encode_point(STATS_MEASUREMENT, {"gateway": self.gateway}, fields, now_ns)


def _families(
    component: str,
    figures: object,
    counters: Collection[str] | None,
    *,
    gauges: Collection[str] = (),
) -> list[Family]:
    """Families from a dataclass, msgspec Struct or mapping; counters are ``counters``, or
    all but ``gauges``."""
    items: Mapping[str, object]
    if dataclasses.is_dataclass(figures) and not isinstance(figures, type):
        items = {f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)}
    elif isinstance(figures, msgspec.Struct):
        items = msgspec.structs.asdict(figures)
    elif isinstance(figures, Mapping):
        items = figures
    else:
        raise TypeError(f"figures of {component!r} must be a dataclass, Struct or mapping")
    families = []
    for key, raw in items.items():
        value = int(raw) if isinstance(raw, bool) else raw
        if not isinstance(value, int | float):
            continue
        name = f"{component}_{key}"
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid metric name")
        counter = key in counters if counters is not None else key not in gauges
        families.append(
            Family(
                name,
                "counter" if counter else "gauge",
                f"{component} {key.replace('_', ' ')}.",
                [({}, value)],
            )
        )
    return families


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP, from a thread of its own."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        address: tuple[str, int],
        health: Callable[[], Health],
    ) -> None:
        handler = _handler(metrics, health)
        try:
            self._server = _Server(address, handler)
        except OSError as exc:
            raise StartError(_listen_problem(address, exc)) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how soon `stop` is noticed
            name="metrics-http",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics_listening", extra=kv(host=self.address[0], port=self.address[1]))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _listen_problem(address: tuple[str, int], exc: OSError) -> str:
    where = f"[http] listen {address[0]}:{address[1]}"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: not an address of this machine ({exc.strerror or exc}): "
            "choose one it has (127.0.0.1, or 0.0.0.0 for all)"
        )
    fixes = {
        errno.EADDRINUSE: "is in use by another process: stop it or choose another address",
        errno.EACCES: "needs root (a port below 1024): choose a port from 1024 up",
    }
    other = f"cannot listen ({exc.strerror or exc}): choose another address"
    return f"{where} {fixes.get(exc.errno or 0, other)}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: Any) -> None:
        log.exception("metrics_request_failed", extra=kv(client=str(client_address)))


def _handler(metrics: GatewayMetrics, health: Callable[[], Health]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, CONTENT_TYPE, metrics.render())
            elif path == "/healthz":
                state = health()
                body = {"status": state.status, **state.details}
                if not state.ok:
                    body["reason"] = state.reason
                elif state.degraded:
                    body["reason"] = "; ".join(state.degraded.values())
                    body["degraded"] = {code.value: why for code, why in state.degraded.items()}
                # Degraded is 200: the process recovers alone; a restart would not help.
                status = HTTPStatus.OK if state.ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, "application/json", json.dumps(body, default=str))
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found: /metrics, /healthz\n")

        def _send(self, status: HTTPStatus, content_type: str, text: str) -> None:
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics_request", extra=kv(client=self.client_address[0], request=args))

    return Handler

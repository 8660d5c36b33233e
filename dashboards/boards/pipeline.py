"""Pipeline health: edge outboxes, gateway ingest, spool, dead letters, gaps, InfluxDB writes.

Everything here is what the pipeline itself writes to InfluxDB: the edge
agents' `host_health` samples and the gateways' `gateway_stats` point (every
10 s, each figure a float; counters only grow, so rates are derivatives).
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana_json import Dashboard, Panel, Query, Variable, matches

_STATS = f'FROM "gateway_stats" WHERE $timeFilter AND {matches("gateway", "gateway")}'
_PER_GATEWAY = 'GROUP BY time($__interval), "gateway" fill(none)'
_STATS_EVERY = "10s"


def _gauge(title: str, field: str, unit: str = "short", description: str = "") -> Panel:
    """The largest value of a gateway figure per interval, per gateway."""
    return Panel(
        title,
        (Query(f'SELECT max("{field}") {_STATS} {_PER_GATEWAY}', alias="$tag_gateway"),),
        unit=unit,
        width=8,
        min_interval=_STATS_EVERY,
        description=description,
    )


def _rate(title: str, *fields: tuple[str, str], description: str = "") -> Panel:
    """Per-second rates of gateway counters, per gateway: one query per (field, alias)."""
    return Panel(
        title,
        tuple(
            Query(
                f'SELECT non_negative_derivative(max("{field}"), 1s) {_STATS} {_PER_GATEWAY}',
                alias=f"$tag_gateway {alias}",
            )
            for field, alias in fields
        ),
        unit="short",
        width=8,
        min_interval=_STATS_EVERY,
        description=description,
    )


def _increase(title: str, *fields: tuple[str, str], description: str = "") -> Panel:
    """How much gateway counters grew in each interval: one query per (field, alias)."""
    return Panel(
        title,
        tuple(
            Query(
                f'SELECT non_negative_difference(max("{field}")) {_STATS} {_PER_GATEWAY}',
                alias=f"$tag_gateway {alias}",
            )
            for field, alias in fields
        ),
        width=8,
        min_interval=_STATS_EVERY,
        description=description,
        custom={"drawStyle": "bars", "fillOpacity": 70},
    )


DASHBOARD: Final = Dashboard(
    uid="tillpulse-pipeline",
    title="tillpulse / Pipeline health",
    description="The pipeline's own figures: edge outboxes, gateway ingest, spool, dead "
    "letters, sequence gaps, forwarder lag and InfluxDB write latency.",
    time_from="now-1h",
    refresh="30s",
    variables=(
        Variable(
            "gateway",
            "Gateway",
            'SHOW TAG VALUES FROM "gateway_stats" WITH KEY = "gateway"',
            multi=True,
        ),
    ),
    panels=(
        Panel(
            "Edge outbox depth",
            (
                Query(
                    'SELECT max("outbox_depth") FROM "host_health" WHERE $timeFilter'
                    ' GROUP BY time($__interval), "device" fill(none)',
                    alias="$tag_device",
                ),
            ),
            width=12,
            description="Events waiting in each edge agent's outbox (its MQTT link is down "
            "or slow when this grows).",
        ),
        Panel(
            "Edge samples dropped",
            (
                Query(
                    'SELECT max("outbox_dropped") FROM "host_health" WHERE $timeFilter'
                    ' GROUP BY time($__interval), "device" fill(none)',
                    alias="$tag_device",
                ),
            ),
            width=12,
            description="Low-priority samples an agent dropped from its full outbox since it "
            "started (payments are never dropped).",
        ),
        _rate(
            "Gateway ingest (messages/s)",
            ("ingest_received", "received"),
            ("ingest_acked", "acked"),
        ),
        _rate(
            "Accepted by stream (messages/s)",
            ("messages_payment_accepted", "payment"),
            ("messages_status_accepted", "status"),
            ("messages_sensor_accepted", "sensor"),
            ("messages_health_accepted", "health"),
        ),
        _rate("InfluxDB writes (lines/s)", ("forwarder_lines_written", "written")),
        _gauge(
            "Spool depth (lines)",
            "spool_depth_lines",
            description="Lines durable in the spool, not yet written to InfluxDB.",
        ),
        _gauge(
            "Forwarder lag",
            "forwarder_lag_s",
            unit="s",
            description="Age of the oldest line not yet written. Only written while lines "
            "wait: no point means no lag.",
        ),
        Panel(
            "InfluxDB write latency",
            tuple(
                Query(f'SELECT max("{field}") {_STATS} {_PER_GATEWAY}', alias=alias)
                for field, alias in (
                    ("forwarder_latency_p50_s", "$tag_gateway p50"),
                    ("forwarder_latency_p99_s", "$tag_gateway p99"),
                )
            ),
            unit="s",
            width=8,
            min_interval=_STATS_EVERY,
            description="Per batch, over the forwarder's recent batches.",
        ),
        _increase(
            "Dead letters and rejections",
            ("deadletters_kept", "dead-lettered"),
            ("rejected_decode_error", "decode error"),
            ("rejected_bad_topic", "bad topic"),
            ("rejected_id_mismatch", "id mismatch"),
            ("rejected_pan_detected", "card number"),
            ("rejected_implausible_time", "implausible time"),
            ("forwarder_dead_lettered", "refused by InfluxDB"),
        ),
        _increase(
            "Sequence gaps and duplicates",
            ("gaps_missing", "missing"),
            ("dedup_duplicates", "duplicates"),
            description="Sequence numbers never seen (per device, from `seq`) and redelivered "
            "events dropped by the deduplicator.",
        ),
        _increase(
            "Retries and back-pressure",
            ("forwarder_retries", "write retries"),
            ("ingest_spool_full", "spool full"),
            ("aggregates_late_events", "late events"),
        ),
    ),
)

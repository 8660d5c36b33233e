"""Terminal detail: one terminal's health, payments, declines and alerts."""

from __future__ import annotations

from typing import Final

from dashboards.boards.common import anomalies
from dashboards.grafana_json import Dashboard, Panel, Query, Variable, matches

_THIS = f"{matches('site', 'site')} AND {matches('device', 'terminal')}"
_STATUS = f'FROM "terminal_status" WHERE $timeFilter AND {_THIS}'
_PAYMENTS = f'FROM "payment" WHERE $timeFilter AND {_THIS}'
_BY_INTERVAL = "GROUP BY time($__interval) fill(none)"


def _status(title: str, unit: str, *fields: tuple[str, str]) -> Panel:
    """A time series of ``mean(field)`` per interval for each (field, alias)."""
    return Panel(
        title,
        tuple(
            Query(f'SELECT mean("{name}") {_STATUS} {_BY_INTERVAL}', alias=alias)
            for name, alias in fields
        ),
        unit=unit,
        width=8,
    )


DASHBOARD: Final = Dashboard(
    uid="tillpulse-terminal",
    title="tillpulse / Terminal detail",
    description="One terminal: connection history, battery, paper, signal, temperature, "
    "payments, declines and alerts.",
    variables=(
        Variable("site", "Site", 'SHOW TAG VALUES FROM "terminal_status" WITH KEY = "site"'),
        Variable(
            "terminal",
            "Terminal",
            'SHOW TAG VALUES FROM "terminal_status" WITH KEY = "device"'
            f" WHERE {matches('site', 'site')}",
        ),
    ),
    annotations=(anomalies(matches("device", "terminal"), name="Alerts for this terminal"),),
    panels=(
        Panel(
            "Status history",
            (
                Query(
                    f'SELECT count("uptime_s") {_STATUS} GROUP BY time($__interval) fill(0)',
                    alias="heartbeats",
                ),
                Query(
                    f'SELECT count("online") FROM "device_state" WHERE $timeFilter AND {_THIS}'
                    " AND \"state\" = 'online' GROUP BY time($__interval) fill(0)",
                    alias="connects",
                ),
            ),
            width=24,
            height=5,
            min_interval="5m",
            custom={"drawStyle": "bars", "fillOpacity": 60},
            description="Status heartbeats per interval (none: the terminal was cut off or "
            "off) and MQTT connects. A last will carries the time of the connect it was "
            "registered at, not of the drop, so heartbeats place an outage in time.",
        ),
        _status("Battery and paper", "percent", ("battery_pct", "battery"), ("paper_pct", "paper")),
        _status("Signal", "dBm", ("signal_dbm", "signal")),
        _status("Temperature", "celsius", ("temperature_c", "temperature")),
        Panel(
            "Tamper and offline queue",
            (
                Query(f'SELECT max("tamper") {_STATUS} {_BY_INTERVAL}', alias="tamper"),
                Query(
                    f'SELECT max("offline_queue") {_STATUS} {_BY_INTERVAL}',
                    alias="stored offline",
                ),
            ),
            width=8,
            description="tamper 1 = the tamper switch is open; the offline queue holds payments "
            "authorised offline, not forwarded yet.",
        ),
        Panel(
            "Payments",
            (
                Query(
                    f'SELECT count("amount_minor") AS "payments", sum("approved") AS "approved"'
                    f" {_PAYMENTS} GROUP BY time($__interval) fill(0)",
                    alias="$col",
                ),
            ),
            width=8,
            custom={"drawStyle": "bars", "fillOpacity": 60},
        ),
        Panel(
            "Authorisation latency",
            (
                Query(
                    'SELECT percentile("auth_latency_ms", 50) AS "p50",'
                    f' percentile("auth_latency_ms", 95) AS "p95" {_PAYMENTS} {_BY_INTERVAL}',
                    alias="$col",
                ),
            ),
            unit="ms",
            width=8,
        ),
        Panel(
            "Declines",
            (
                Query(
                    'SELECT "response_code", "acquirer", "amount_minor", "auth_latency_ms",'
                    f' "method" {_PAYMENTS} AND "approved" = 0 ORDER BY time DESC LIMIT 100',
                    result_format="table",
                ),
            ),
            type="table",
            description="Declined payments, newest first, with the ISO 8583 response code.",
        ),
        Panel(
            "Alerts",
            (
                Query(
                    'SELECT "type", "severity", "status", "score", "summary" FROM "anomaly"'
                    f" WHERE $timeFilter AND {matches('device', 'terminal')}"
                    " ORDER BY time DESC LIMIT 100",
                    result_format="table",
                ),
            ),
            type="table",
        ),
    ),
)

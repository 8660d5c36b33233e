"""Grafana unified-alerting rules and the webhook contact point, as code.

A rule runs one or more InfluxQL queries (refIds ``A``, ``B``...), each over
its own window ending now; reduces each series to its last value (``RA``,
``RB``...); optionally combines them with a math expression (``M``, e.g.
``($RA - $RB) / $RA``); and compares the result with a threshold (``T``, the
condition). A query grouped by a tag gives one alert instance per tag value
(per site, per terminal, per gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from dashboards.grafana_json import DATASOURCE_UID, JSON

FOLDER_UID: Final = "tillpulse"
FOLDER_TITLE: Final = "tillpulse"
RULE_GROUP: Final = "tillpulse"
EVALUATE_EVERY_S: Final = 60
CONTACT_POINT: Final = "tillpulse-webhook"
WEBHOOK_URL_ENV: Final = "TILLPULSE_ALERT_WEBHOOK_URL"
EXPRESSION_UID: Final = "__expr__"
MATH_REF: Final = "M"
CONDITION_REF: Final = "T"

NoData = Literal["OK", "NoData", "Alerting"]


@dataclass(frozen=True)
class RuleQuery:
    influxql: str  # uses $timeFilter; Grafana fills it from the window
    window_s: int


@dataclass(frozen=True)
class AlertRule:
    uid: str
    title: str
    queries: tuple[RuleQuery, ...]  # refIds A, B, ... in order
    above: bool  # fires when the value is above (True) or below (False) the threshold
    threshold: float
    pending: str  # how long the condition must hold ("for")
    severity: Literal["warning", "critical"]
    summary: str
    math: str = ""  # over the reduced $RA, $RB...; empty: the threshold applies to RA
    no_data: NoData = "OK"

    def data(self) -> list[JSON]:
        steps: list[JSON] = []
        for index, query in enumerate(self.queries):
            ref = chr(ord("A") + index)
            steps.append(_influxql(ref, query))
            steps.append(_expression(f"R{ref}", type="reduce", expression=ref, reducer="last"))
        compared = "RA"
        if self.math:
            steps.append(_expression(MATH_REF, type="math", expression=self.math))
            compared = MATH_REF
        evaluator = {"type": "gt" if self.above else "lt", "params": [self.threshold]}
        steps.append(
            _expression(
                CONDITION_REF,
                type="threshold",
                expression=compared,
                conditions=[{"evaluator": evaluator}],
            )
        )
        return steps

    def body(self) -> JSON:
        """The rule as Grafana's provisioning files and its provisioning API share it."""
        return {
            "uid": self.uid,
            "title": self.title,
            "condition": CONDITION_REF,
            "data": self.data(),
            "noDataState": self.no_data,
            "execErrState": "Error",
            "for": self.pending,
            "annotations": {"summary": self.summary},
            "labels": {"severity": self.severity, "service": "tillpulse"},
            "isPaused": False,
        }

    def api_body(self) -> JSON:
        """The rule for Grafana's alerting provisioning API."""
        return self.body() | {"folderUID": FOLDER_UID, "ruleGroup": RULE_GROUP, "orgID": 1}


def _influxql(ref: str, query: RuleQuery) -> JSON:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": query.window_s, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": ref,
            "query": query.influxql,
            "rawQuery": True,
            "resultFormat": "time_series",
            "intervalMs": 1000,
            "maxDataPoints": 43200,
        },
    }


def _expression(ref: str, **model: object) -> JSON:
    return {"refId": ref, "datasourceUid": EXPRESSION_UID, "model": {"refId": ref, **model}}


OFFLINE_SHARE: Final = 0.05
APPROVAL_FLOOR: Final = 0.80
APPROVAL_MIN_PAYMENTS: Final = 10
APPROVAL_WINDOW_S: Final = 15 * 60
SPOOL_GROWTH_LINES: Final = 100_000
SILENT_AFTER_S: Final = 600
# each terminal's last heartbeat in the window, counted: the terminals that reported
_TERMINALS_REPORTING: Final = (
    'SELECT count("uptime_s") FROM (SELECT last("uptime_s") AS "uptime_s" FROM "terminal_status"'
    ' WHERE $timeFilter GROUP BY "device")'
)

RULES: Final[tuple[AlertRule, ...]] = (
    AlertRule(
        uid="tillpulse-terminals-offline",
        title="Terminals offline",
        # terminals seen in the last 24 h (A) and those with a heartbeat in the last 10 min (B)
        queries=(
            RuleQuery(_TERMINALS_REPORTING, 24 * 3600),
            RuleQuery(_TERMINALS_REPORTING, SILENT_AFTER_S),
        ),
        math="($RA - $RB) / $RA",
        above=True,
        threshold=OFFLINE_SHARE,
        pending="5m",
        severity="critical",
        summary=f"More than {OFFLINE_SHARE:.0%} of the terminals seen in the last 24 h sent no "
        f"status heartbeat in the last {SILENT_AFTER_S // 60} minutes.",
        no_data="Alerting",  # not one heartbeat in 10 minutes (or 24 h): the fleet is dark
    ),
    AlertRule(
        uid="tillpulse-approval-drop",
        title="Approval rate drop",
        queries=(
            RuleQuery(
                'SELECT sum("approved") / sum("count") FROM "payment_1m_site"'
                ' WHERE $timeFilter GROUP BY "site"',
                APPROVAL_WINDOW_S,
            ),
            RuleQuery(
                'SELECT sum("count") FROM "payment_1m_site" WHERE $timeFilter GROUP BY "site"',
                APPROVAL_WINDOW_S,
            ),
        ),
        # per site (series joined by their site label); a handful of payments is no evidence
        math=f"$RA < {APPROVAL_FLOOR} && $RB >= {APPROVAL_MIN_PAYMENTS}",
        above=True,
        threshold=0,
        pending="5m",
        severity="critical",
        summary=f"A site approved fewer than {APPROVAL_FLOOR:.0%} of its payments (at least "
        f"{APPROVAL_MIN_PAYMENTS}) over the last 15 minutes: an acquirer outage or a decline "
        "spike.",
    ),
    AlertRule(
        uid="tillpulse-tamper",
        title="Terminal tampered",
        queries=(
            RuleQuery(
                'SELECT max("tamper") FROM "terminal_status" WHERE $timeFilter'
                ' GROUP BY "site", "device"',
                10 * 60,
            ),
        ),
        above=True,
        threshold=0,
        pending="0s",
        severity="critical",
        summary="A terminal reported its tamper switch open: take it out of service.",
    ),
    AlertRule(
        uid="tillpulse-spool-growth",
        title="Gateway spool growing",
        queries=(
            RuleQuery(
                'SELECT last("spool_depth_lines") - first("spool_depth_lines")'
                ' FROM "gateway_stats" WHERE $timeFilter GROUP BY "gateway"',
                10 * 60,
            ),
        ),
        above=True,
        threshold=SPOOL_GROWTH_LINES,
        pending="5m",
        severity="warning",
        summary=f"A gateway's spool grew by more than {SPOOL_GROWTH_LINES:,} lines in 10 "
        "minutes: InfluxDB is slow, refusing writes or down.",
        # gateways write gateway_stats through the same spool: while InfluxDB is down none
        # arrive, so no data at all is itself the alarm
        no_data="Alerting",
    ),
)


def contact_point() -> JSON:
    """The webhook receiver; Grafana expands ``$VAR`` in provisioning files from its env."""
    return {
        "uid": CONTACT_POINT,
        "name": CONTACT_POINT,
        "type": "webhook",
        "settings": {"url": f"${WEBHOOK_URL_ENV}", "httpMethod": "POST"},
        "disableResolveMessage": False,
    }

"""Grafana unified-alerting rules and the webhook contact point, as code.

A rule runs one or more InfluxQL queries (refIds ``A``, ``B``...), each over
its own window ending now; reduces each series to its last value (``RA``,
``RB``...); optionally combines them with a math expression (``M``, e.g.
``($RA - $RB) / $RA``); and compares the result with a threshold (``T``, the
condition). A query grouped by a tag gives one alert instance per tag value
(per site, per terminal, per gateway).

Each rule's figures (threshold, window, pending period) are constants here,
and its ``fires_when`` sentence is built from them: both docs
(docs/dashboards.md, docs/operations.md) quote that sentence and the pending
period, and tests/dashboards/test_alert_docs.py fails when they do not.

The rules query the datasource by uid (alert rules have no template
variables): the provisioned ``tillpulse-influxdb`` in the provisioning file,
the one ``push`` is told to use otherwise.
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
    pending_s: int  # how long the condition must hold ("for")
    severity: Literal["warning", "critical"]
    fires_when: str  # the condition with its figures, as the docs quote it
    advice: str = ""  # what it likely means, after the condition in the alert's summary
    math: str = ""  # over the reduced $RA, $RB...; empty: the threshold applies to RA
    no_data: NoData = "OK"

    @property
    def pending(self) -> str:
        """Grafana's ``for`` (a Prometheus duration): ``5m``, ``0s``."""
        minutes, seconds = divmod(self.pending_s, 60)
        return f"{minutes}m" if minutes and not seconds else f"{self.pending_s}s"

    @property
    def summary(self) -> str:
        """The alert's summary annotation: the condition, and what it likely means."""
        text = self.fires_when[0].upper() + self.fires_when[1:]
        return f"{text}: {self.advice}." if self.advice else f"{text}."

    @property
    def pending_text(self) -> str:
        """The pending period as the docs say it."""
        return f"for {span(self.pending_s)}" if self.pending_s else "at once"

    def data(self, datasource_uid: str) -> list[JSON]:
        steps: list[JSON] = []
        for index, query in enumerate(self.queries):
            ref = chr(ord("A") + index)
            steps.append(_influxql(ref, query, datasource_uid))
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

    def body(self, datasource_uid: str = DATASOURCE_UID) -> JSON:
        """The rule as Grafana's provisioning files and its provisioning API share it."""
        return {
            "uid": self.uid,
            "title": self.title,
            "condition": CONDITION_REF,
            "data": self.data(datasource_uid),
            "noDataState": self.no_data,
            "execErrState": "Error",
            "for": self.pending,
            "annotations": {"summary": self.summary},
            "labels": {"severity": self.severity, "service": "tillpulse"},
            "isPaused": False,
        }

    def api_body(self, datasource_uid: str) -> JSON:
        """The rule for Grafana's alerting provisioning API."""
        body = self.body(datasource_uid)
        return body | {"folderUID": FOLDER_UID, "ruleGroup": RULE_GROUP, "orgID": 1}


def span(seconds: int) -> str:
    """``600`` -> ``10 minutes``, ``86400`` -> ``24 h``: how the docs and summaries say it."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} s"


def _influxql(ref: str, query: RuleQuery, datasource_uid: str) -> JSON:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": query.window_s, "to": 0},
        "datasourceUid": datasource_uid,
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
SEEN_WITHIN_S: Final = 24 * 3600
SILENT_AFTER_S: Final = 10 * 60
APPROVAL_FLOOR: Final = 0.80
APPROVAL_MIN_PAYMENTS: Final = 10
APPROVAL_WINDOW_S: Final = 15 * 60
TAMPER_WINDOW_S: Final = 10 * 60
SPOOL_GROWTH_LINES: Final = 100_000
SPOOL_WINDOW_S: Final = 10 * 60
PENDING_S: Final = 5 * 60  # a condition holding this long is no blip
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
            RuleQuery(_TERMINALS_REPORTING, SEEN_WITHIN_S),
            RuleQuery(_TERMINALS_REPORTING, SILENT_AFTER_S),
        ),
        math="($RA - $RB) / $RA",
        above=True,
        threshold=OFFLINE_SHARE,
        pending_s=PENDING_S,
        severity="critical",
        fires_when=f"more than {OFFLINE_SHARE:.0%} of the terminals seen in the last "
        f"{span(SEEN_WITHIN_S)} sent no status heartbeat in the last {span(SILENT_AFTER_S)}",
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
        pending_s=PENDING_S,
        severity="critical",
        fires_when=f"a site approved fewer than {APPROVAL_FLOOR:.0%} of its payments (at least "
        f"{APPROVAL_MIN_PAYMENTS}) over the last {span(APPROVAL_WINDOW_S)}",
        advice="an acquirer outage or a decline spike",
    ),
    AlertRule(
        uid="tillpulse-tamper",
        title="Terminal tampered",
        queries=(
            RuleQuery(
                'SELECT max("tamper") FROM "terminal_status" WHERE $timeFilter'
                ' GROUP BY "site", "device"',
                TAMPER_WINDOW_S,
            ),
        ),
        above=True,
        threshold=0,
        pending_s=0,  # one report is enough
        severity="critical",
        fires_when="a terminal reported its tamper switch open in the last "
        f"{span(TAMPER_WINDOW_S)}",
        advice="take it out of service",
    ),
    AlertRule(
        uid="tillpulse-spool-growth",
        title="Gateway spool growing",
        queries=(
            RuleQuery(
                'SELECT last("spool_depth_lines") - first("spool_depth_lines")'
                ' FROM "gateway_stats" WHERE $timeFilter GROUP BY "gateway"',
                SPOOL_WINDOW_S,
            ),
        ),
        above=True,
        threshold=SPOOL_GROWTH_LINES,
        pending_s=PENDING_S,
        severity="warning",
        fires_when=f"a gateway's spool grew by more than {SPOOL_GROWTH_LINES:,} lines in "
        f"{span(SPOOL_WINDOW_S)}",
        advice="InfluxDB is slow, refusing writes or down",
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

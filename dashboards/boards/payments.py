"""Payments health: decline codes, acquirers, and the card-fraud signals."""

from __future__ import annotations

from typing import Final

from dashboards.boards.common import IN_SITES, SITES, anomalies
from dashboards.grafana_json import Dashboard, Panel, Query, Variable, matches

_FRAUD_TYPES = "card_testing|card_velocity|amount_outlier"
_PAYMENTS = f'FROM "payment" WHERE $timeFilter AND {IN_SITES} AND {matches("acquirer", "acquirer")}'
_DECLINES = f'FROM "decline_1m_site" WHERE $timeFilter AND {IN_SITES}'
_PER_ACQUIRER = 'GROUP BY time($__interval), "acquirer" fill(none)'
SMALL_AMOUNT_MINOR: Final = 500  # card testers probe with micro amounts

DASHBOARD: Final = Dashboard(
    uid="tillpulse-payments",
    title="tillpulse / Payments health",
    description="Decline-code mix, approval and latency per acquirer, card-testing and "
    "velocity signals.",
    variables=(
        SITES,
        Variable(
            "acquirer",
            "Acquirer",
            'SHOW TAG VALUES FROM "payment" WITH KEY = "acquirer"',
            multi=True,
        ),
    ),
    annotations=(anomalies(f'"type" =~ /^({_FRAUD_TYPES}|acquirer_outage|approval_drop)$/'),),
    panels=(
        Panel(
            "Declines by response code",
            (
                Query(
                    f'SELECT sum("count") {_DECLINES}'
                    ' GROUP BY time($__interval), "response_code" fill(none)',
                    alias="$tag_response_code",
                ),
            ),
            width=16,
            min_interval="1m",
            custom={"drawStyle": "bars", "fillOpacity": 70, "stacking": {"mode": "normal"}},
        ),
        Panel(
            "Decline-code mix",
            (
                Query(
                    f'SELECT sum("count") {_DECLINES} GROUP BY "response_code"',
                    alias="$tag_response_code",
                ),
            ),
            type="piechart",
            width=8,
            options={"reduceOptions": {"calcs": ["sum"]}, "legend": {"displayMode": "table"}},
        ),
        Panel(
            "Approval rate by acquirer",
            (Query(f'SELECT mean("approved") {_PAYMENTS} {_PER_ACQUIRER}', alias="$tag_acquirer"),),
            unit="percentunit",
        ),
        Panel(
            "Acquirer latency p95",
            (
                Query(
                    f'SELECT percentile("auth_latency_ms", 95) {_PAYMENTS} {_PER_ACQUIRER}',
                    alias="$tag_acquirer",
                ),
            ),
            unit="ms",
        ),
        Panel(
            "Card testing: small declined attempts",
            (
                Query(
                    f'SELECT count("amount_minor") {_PAYMENTS} AND "approved" = 0'
                    f' AND "amount_minor" < {SMALL_AMOUNT_MINOR}'
                    " GROUP BY time($__interval) fill(0)",
                    alias="declined under 5.00",
                ),
            ),
            width=8,
            description="A burst of declined micro-amount payments is the signature of a "
            "card-testing attack.",
        ),
        Panel(
            "Velocity: payments vs distinct cards",
            (
                Query(
                    'SELECT count("card_token") AS "payments",'
                    f' count(distinct("card_token")) AS "distinct cards" {_PAYMENTS}'
                    " GROUP BY time($__interval) fill(0)",
                    alias="$col",
                ),
            ),
            width=8,
            description="Payments pulling away from distinct cards: cards reused quickly.",
        ),
        Panel(
            "Fraud alerts",
            (
                Query(
                    'SELECT count("score") FROM "anomaly" WHERE $timeFilter'
                    f' AND "status" = \'firing\' AND "type" =~ /^({_FRAUD_TYPES})$/'
                    f" AND ({IN_SITES} OR \"site\" = '')"
                    ' GROUP BY time($__interval), "type" fill(none)',
                    alias="$tag_type",
                ),
            ),
            width=8,
            custom={"drawStyle": "bars", "fillOpacity": 70},
        ),
    ),
)

"""Fleet overview: is the fleet up, is it trading, and where does it hurt."""

from __future__ import annotations

from typing import Final

from dashboards.boards import terminal
from dashboards.boards.common import ANOMALIES_IN_SITES, IN_SITES, SITES
from dashboards.grafana_json import Dashboard, DrillDown, Panel, Query

UID: Final = "tillpulse-fleet"

# Whether each terminal is connected, from its `device_state` points: every session
# writes one online point at connect and at most one offline point (its last will, or a
# shutdown), and a last will carries the *connect* time (the broker publishes the payload
# registered then). So per terminal, online points minus offline points is 1 while its
# session is up and 0 once it ended: 2 * sum(online) - count(online). Looking back 30 days
# from the end of the range; a terminal that has not reconnected in 30 days is not counted.
_CONNECTED = (
    'SELECT 2 * sum("online") - count("online") AS "up" FROM "device_state"'
    f" WHERE time > ${{__to}}ms - 30d AND time <= ${{__to}}ms AND {IN_SITES}"
    ' GROUP BY "device"'
)
_SITE_AGGREGATES = f'FROM "payment_1m_site" WHERE $timeFilter AND {IN_SITES}'


def _stat(title: str, influxql: str, unit: str = "short", description: str = "") -> Panel:
    return Panel(
        title,
        (Query(influxql),),
        type="stat",
        unit=unit,
        width=4,
        height=4,
        description=description,
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
    )


DASHBOARD: Final = Dashboard(
    uid=UID,
    title="tillpulse / Fleet overview",
    description="Terminals online, payments, approval rate, latency, and the worst sites and "
    "terminals; anomalies from the cloud jobs as annotations.",
    variables=(SITES,),
    annotations=(ANOMALIES_IN_SITES,),
    panels=(
        _stat(
            "Devices online",
            f'SELECT sum("up") FROM ({_CONNECTED})',
            description="Terminals and sensors connected at the end of the range.",
        ),
        _stat(
            "Devices offline",
            f'SELECT count("up") - sum("up") FROM ({_CONNECTED})',
            description="Dropped off (the broker published the last will) or shut down.",
        ),
        _stat("Payments", f'SELECT sum("count") {_SITE_AGGREGATES}'),
        _stat(
            "Approval rate",
            f'SELECT sum("approved") / sum("count") {_SITE_AGGREGATES}',
            unit="percentunit",
        ),
        _stat(
            "Approved volume",
            f'SELECT sum("volume_minor") / 100 {_SITE_AGGREGATES}',
            description="Approved amounts in major units (a site trades in one currency).",
        ),
        _stat(
            "Anomalies raised",
            'SELECT count("score") FROM "anomaly" WHERE $timeFilter'
            f" AND \"status\" = 'firing' AND ({IN_SITES} OR \"site\" = '')",
        ),
        Panel(
            "Transactions per second",
            (
                Query(
                    f'SELECT sum("count") / ($__interval_ms / 1000) {_SITE_AGGREGATES}'
                    " GROUP BY time($__interval) fill(0)",
                    alias="payments/s",
                ),
            ),
            unit="short",
            min_interval="1m",
            description="From the gateways' 1-minute site aggregates.",
        ),
        Panel(
            "Approval rate by site",
            (
                Query(
                    f'SELECT sum("approved") / sum("count") {_SITE_AGGREGATES}'
                    ' GROUP BY time($__interval), "site" fill(none)',
                    alias="$tag_site",
                ),
            ),
            unit="percentunit",
            min_interval="1m",
        ),
        Panel(
            "Approved volume",
            (
                Query(
                    f'SELECT sum("volume_minor") / 100 {_SITE_AGGREGATES}'
                    " GROUP BY time($__interval) fill(0)",
                    alias="volume",
                ),
            ),
            min_interval="1m",
            custom={"drawStyle": "bars", "fillOpacity": 60},
        ),
        Panel(
            "Authorisation latency p95",
            (
                Query(
                    'SELECT percentile("auth_latency_ms", 95) FROM "payment"'
                    f" WHERE $timeFilter AND {IN_SITES} GROUP BY time($__interval) fill(none)",
                    alias="p95",
                ),
            ),
            unit="ms",
            description="Exact, over every payment (the aggregates' percentiles are per gateway).",
        ),
        Panel(
            "Terminals reporting",
            (
                Query(
                    'SELECT count("battery_pct") FROM (SELECT last("battery_pct") AS "battery_pct"'
                    f' FROM "terminal_status" WHERE $timeFilter AND {IN_SITES}'
                    ' GROUP BY time($__interval), "device")'
                    " WHERE $timeFilter GROUP BY time($__interval)",
                    alias="terminals",
                ),
            ),
            min_interval="5m",
            description="Terminals that sent a status heartbeat in each interval.",
        ),
        Panel(
            "Worst sites",
            (
                Query(
                    'SELECT sum("approved") / sum("count") AS "approval_rate",'
                    ' sum("declined") AS "declined", sum("count") AS "payments"'
                    f' {_SITE_AGGREGATES} GROUP BY "site"',
                    result_format="table",
                ),
            ),
            type="table",
            options={"sortBy": [{"displayName": "approval_rate", "desc": False}]},
            description="A site opens this dashboard on that site alone.",
            # the site view: this dashboard, $site set to the one clicked
            drill_downs=(
                DrillDown("site", "Fleet overview of ${__value.text}", UID, (("site", "site"),)),
            ),
        ),
        Panel(
            "Worst terminals (lowest approval rate)",
            (
                Query(
                    'SELECT bottom("approval_rate", "device", "site", 10) AS "approval_rate"'
                    ' FROM (SELECT sum("approved") / sum("count") AS "approval_rate"'
                    f' FROM "payment_1m_device" WHERE $timeFilter AND {IN_SITES}'
                    ' GROUP BY "site", "device")',
                    result_format="table",
                ),
            ),
            type="table",
            options={"sortBy": [{"displayName": "approval_rate", "desc": False}]},
            description="A terminal opens its Terminal detail.",
            # the site too: Terminal detail offers only the chosen site's terminals
            drill_downs=(
                DrillDown(
                    "device",
                    "Terminal detail of ${__value.text}",
                    terminal.DASHBOARD.uid,
                    (("site", "site"), ("terminal", "device")),
                ),
            ),
        ),
        Panel(
            "Recent anomalies",
            (
                Query(
                    'SELECT "type", "severity", "site", "device", "score", "summary"'
                    ' FROM "anomaly" WHERE $timeFilter AND "status" = \'firing\''
                    f" AND ({IN_SITES} OR \"site\" = '') ORDER BY time DESC LIMIT 50",
                    result_format="table",
                ),
            ),
            type="table",
            width=24,
        ),
    ),
)

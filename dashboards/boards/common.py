"""What several dashboards share: the site variable and the anomaly annotations."""

from __future__ import annotations

from typing import Final

from dashboards.grafana_json import Annotation, Variable, matches

SITES: Final = Variable(
    "site", "Site", 'SHOW TAG VALUES FROM "terminal_status" WITH KEY = "site"', multi=True
)
IN_SITES: Final = matches("site", "site")


def anomalies(where: str, name: str = "Anomalies") -> Annotation:
    """Firing anomalies (the cloud jobs' `anomaly` points) matching ``where``, as events."""
    return Annotation(
        name=name,
        influxql=(
            'SELECT "summary", "type", "severity", "site", "device" FROM "anomaly"'
            f" WHERE $timeFilter AND \"status\" = 'firing' AND ({where})"
        ),
        text_column="summary",
        tags_column="type,severity,site,device",
    )


# fleet-wide anomalies have no site tag (InfluxQL matches a missing tag as '')
ANOMALIES_IN_SITES: Final = anomalies(f"{IN_SITES} OR \"site\" = ''")

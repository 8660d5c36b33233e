"""Grafana provisioning files: the InfluxDB datasources, the dashboards provider, alerting.

Two datasources, one InfluxDB: the live fleet's database (``$INFLUX_DB``, the
default, the one the alert rules query) and the simulated fleet's
(``$INFLUX_SIM_DB``); every dashboard switches between them with its
``$datasource`` variable.

Grafana reads YAML; JSON is valid YAML, so the files are JSON under a comment
line (no YAML library needed). Grafana expands ``$VAR`` in provisioning files
from its environment: the InfluxDB address and credentials and the webhook
URL are never written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dashboards.alert_rules import (
    CONTACT_POINT,
    EVALUATE_EVERY_S,
    FOLDER_TITLE,
    FOLDER_UID,
    RULE_GROUP,
    RULES,
    contact_point,
)
from dashboards.grafana_json import DATASOURCE_UID, JSON

DATASOURCE_NAME: Final = "tillpulse InfluxDB"
SIM_DATASOURCE_UID: Final = "tillpulse-influxdb-sim"
SIM_DATASOURCE_NAME: Final = "tillpulse InfluxDB (simulated fleet)"
# Grafana's provisioning expands $VAR with no default: its environment must set it
# (docker-compose: tillpulse-sim unless INFLUX_SIM_DB says otherwise)
SIM_DATABASE: Final = "$INFLUX_SIM_DB"
# the datasource's min interval, so $__interval never goes below the finest data written
# (gateway_stats every 10 s)
MIN_INTERVAL: Final = "10s"
# where the provider finds the dashboard JSON inside the Grafana container (mount json/ there)
DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards/tillpulse"


@dataclass(frozen=True)
class InfluxSettings:
    """Where Grafana reads from; the provisioning file leaves Grafana's env to fill them."""

    url: str = "$INFLUX_URL"
    database: str = "$INFLUX_DB"
    user: str = "$INFLUX_USER"
    password: str = "$INFLUX_PASSWORD"


def datasource(
    influx: InfluxSettings, uid: str = DATASOURCE_UID, name: str = DATASOURCE_NAME
) -> JSON:
    """An InfluxQL datasource (InfluxDB 1.x natively, 2.x via its DBRP mapping, 3.x)."""
    return {
        "name": name,
        "uid": uid,
        "type": "influxdb",
        "access": "proxy",
        "url": influx.url,
        "user": influx.user,
        "jsonData": {
            "dbName": influx.database,
            "httpMode": "POST",
            "version": "InfluxQL",
            "timeInterval": MIN_INTERVAL,
        },
        "secureJsonData": {"password": influx.password},
    }


def datasources_file() -> JSON:
    fixed = {"orgId": 1, "editable": False}
    live = datasource(InfluxSettings()) | fixed | {"isDefault": True}
    sim = datasource(InfluxSettings(database=SIM_DATABASE), SIM_DATASOURCE_UID, SIM_DATASOURCE_NAME)
    return {"apiVersion": 1, "datasources": [live, sim | fixed | {"isDefault": False}]}


def dashboards_file() -> JSON:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "tillpulse",
                "orgId": 1,
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
            }
        ],
    }


def alerting_file() -> JSON:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": RULE_GROUP,
                "folder": FOLDER_TITLE,
                "interval": f"{EVALUATE_EVERY_S}s",
                "rules": [rule.body() for rule in RULES],
            }
        ],
        "contactPoints": [
            {"orgId": 1, "name": CONTACT_POINT, "receivers": [contact_point()]},
        ],
        # replaces the org's notification policy tree: everything to the webhook
        "policies": [
            {
                "orgId": 1,
                "receiver": CONTACT_POINT,
                "group_by": ["alertname", "site"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            }
        ],
    }

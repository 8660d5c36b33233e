"""Every committed dashboard is well formed for Grafana, and so are the alert rules."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import pytest

from dashboards.generate import PACKAGE_DIR
from dashboards.grafana_json import GRID_WIDTH
from dashboards.macros import used_variables

JSON = dict[str, Any]
BOARDS = sorted((PACKAGE_DIR / "json").glob("*.json"))


def provisioned(name: str) -> JSON:
    text = (PACKAGE_DIR / f"provisioning/{name}/tillpulse.yaml").read_text(encoding="utf-8")
    document: JSON = json.loads(text.split("\n", 1)[1])  # JSON under a YAML comment line
    return document


DATASOURCE_UID = provisioned("datasources")["datasources"][0]["uid"]


def load(path: Any) -> JSON:
    board: JSON = json.loads(path.read_text(encoding="utf-8"))
    return board


def test_there_are_the_four_dashboards() -> None:
    assert {path.stem for path in BOARDS} == {
        "tillpulse-fleet",
        "tillpulse-terminal",
        "tillpulse-payments",
        "tillpulse-pipeline",
    }


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_panel_ids_are_unique_and_the_uid_is_the_file_name(path: Any) -> None:
    board = load(path)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == path.stem


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_panel_target_variable_and_annotation_uses_the_provisioned_datasource(
    path: Any,
) -> None:
    board = load(path)
    refs = [panel["datasource"] for panel in board["panels"]]
    refs += [target["datasource"] for panel in board["panels"] for target in panel["targets"]]
    refs += [variable["datasource"] for variable in board["templating"]["list"]]
    refs += [annotation["datasource"] for annotation in board["annotations"]["list"]]
    assert refs
    assert all(ref == {"type": "influxdb", "uid": DATASOURCE_UID} for ref in refs), refs


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_panels_fit_the_grid_and_do_not_overlap(path: Any) -> None:
    boxes = [(panel["title"], panel["gridPos"]) for panel in load(path)["panels"]]
    for title, box in boxes:
        assert box["x"] >= 0 and box["y"] >= 0 and box["w"] > 0 and box["h"] > 0, title
        assert box["x"] + box["w"] <= GRID_WIDTH, title
    for (one, a), (other, b) in combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"{one!r} overlaps {other!r}"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_variable_used_is_defined_before_it_is_used(path: Any) -> None:
    board = load(path)
    defined: set[str] = set()
    for variable in board["templating"]["list"]:
        assert used_variables(variable["query"]) <= defined, variable["name"]
        defined.add(variable["name"])
    queries = [target["query"] for panel in board["panels"] for target in panel["targets"]]
    queries += [annotation["target"]["query"] for annotation in board["annotations"]["list"]]
    for query in queries:
        assert used_variables(query) <= defined, query


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_query_is_raw_influxql_with_a_time_filter(path: Any) -> None:
    board = load(path)
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert target["rawQuery"] is True
            query = target["query"]
            assert "$timeFilter" in query or "${__to}" in query, (panel["title"], query)


def test_alert_rules_use_the_provisioned_datasource_and_a_defined_condition() -> None:
    alerting = provisioned("alerting")
    (group,) = alerting["groups"]
    uids = [rule["uid"] for rule in group["rules"]]
    assert len(uids) == len(set(uids)) == 4
    for rule in group["rules"]:
        refs = {step["refId"] for step in rule["data"]}
        assert rule["condition"] in refs
        for step in rule["data"]:
            assert step["datasourceUid"] in (DATASOURCE_UID, "__expr__")
            expression = step["model"].get("expression")
            if step["model"].get("type") in ("reduce", "threshold"):
                assert expression in refs, (rule["uid"], expression)
    receivers = [r["uid"] for point in alerting["contactPoints"] for r in point["receivers"]]
    assert alerting["policies"][0]["receiver"] in {p["name"] for p in alerting["contactPoints"]}
    assert receivers == ["tillpulse-webhook"]


def test_the_dashboards_provider_and_datasource_take_their_settings_from_the_environment() -> None:
    (source,) = provisioned("datasources")["datasources"]
    assert source["url"] == "$INFLUX_URL"
    assert source["jsonData"]["dbName"] == "$INFLUX_DB"
    assert source["secureJsonData"]["password"] == "$INFLUX_PASSWORD"
    (provider,) = provisioned("dashboards")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]

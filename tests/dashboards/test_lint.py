"""Every committed dashboard is well formed for Grafana, and so are the alert rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import combinations
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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


DATASOURCES = provisioned("datasources")["datasources"]
(DATASOURCE_UID,) = (source["uid"] for source in DATASOURCES if source["isDefault"])
VARIABLE_REF = {"type": "influxdb", "uid": "${datasource}"}


def load(path: Any) -> JSON:
    board: JSON = json.loads(path.read_text(encoding="utf-8"))
    return board


def walk(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for name, child in node.items():
            if name == key:
                yield child
            yield from walk(child, key)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child, key)


def variables(board: JSON) -> list[JSON]:
    listed: list[JSON] = board["templating"]["list"]
    return listed


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
def test_every_datasource_reference_is_the_datasource_variable(path: Any) -> None:
    board = load(path)
    refs = list(walk(board, "datasource"))
    # a panel, a target per panel, the query variables, the annotations: all of them
    expected = len(board["panels"]) + sum(len(panel["targets"]) for panel in board["panels"])
    expected += len(variables(board)) - 1 + len(board["annotations"]["list"])
    assert len(refs) == expected
    assert all(ref == VARIABLE_REF for ref in refs), refs


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_no_datasource_uid_is_written_but_the_variables_default(path: Any) -> None:
    board = load(path)
    source, *rest = variables(board)
    assert (source["name"], source["type"], source["query"]) == (
        "datasource",
        "datasource",
        "influxdb",
    )
    assert source["current"]["value"] == DATASOURCE_UID  # the provisioned default datasource
    text = json.dumps({key: value for key, value in board.items() if key != "templating"})
    text += json.dumps(rest)
    for uid in (s["uid"] for s in DATASOURCES):
        assert uid not in text


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
    for variable in variables(board):
        assert used_variables(variable["query"]) <= defined, variable["name"]
        assert used_variables(variable.get("datasource", {}).get("uid", "")) <= defined
        defined.add(variable["name"])
    assert used_variables(VARIABLE_REF["uid"]) <= defined
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


def test_the_dashboards_provider_and_datasources_take_their_settings_from_the_environment() -> None:
    live, sim = DATASOURCES
    assert (live["uid"], live["isDefault"], sim["isDefault"]) == (DATASOURCE_UID, True, False)
    assert live["jsonData"]["dbName"] == "$INFLUX_DB"
    assert sim["jsonData"]["dbName"] == "$INFLUX_SIM_DB"  # the simulated fleet's database
    for source in (live, sim):
        assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
        assert source["url"] == "$INFLUX_URL"
        assert source["secureJsonData"]["password"] == "$INFLUX_PASSWORD"
    (provider,) = provisioned("dashboards")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# links between the dashboards

BY_UID = {board["uid"]: board for board in map(load, BOARDS)}
DATA_LINK_VALUE = re.compile(r"\$\{__data\.fields\.(\w+)\}")


def data_links(board: JSON) -> Iterator[tuple[JSON, str, JSON]]:
    """(panel, the column it is on, link) for every data link of a table column."""
    for panel in board["panels"]:
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        yield panel, override["matcher"]["options"], link


def test_the_fleet_drills_down_to_a_site_and_to_a_terminal() -> None:
    targets = {
        (panel["title"], column): urlsplit(link["url"]).path
        for panel, column, link in data_links(BY_UID["tillpulse-fleet"])
    }
    assert targets == {
        ("Worst sites", "site"): "/d/tillpulse-fleet",
        ("Worst terminals (lowest approval rate)", "device"): "/d/tillpulse-terminal",
    }


@pytest.mark.parametrize("uid", sorted(BY_UID))
def test_a_data_link_opens_a_dashboard_there_is_with_its_variables_time_and_datasource(
    uid: str,
) -> None:
    for panel, _, link in data_links(BY_UID[uid]):
        parts = urlsplit(link["url"])
        target = parts.path.removeprefix("/d/")
        assert target in BY_UID, link["url"]
        assert parts.query.startswith("${__url_time_range}&"), link["url"]
        params = dict(parse_qsl(parts.query.removeprefix("${__url_time_range}&")))
        names = {variable["name"] for variable in variables(BY_UID[target])}
        assert {name.removeprefix("var-") for name in params} <= names, link["url"]
        assert params["var-datasource"] == "${datasource}"
        columns = {c for value in params.values() for c in DATA_LINK_VALUE.findall(value)}
        assert columns, link["url"]
        for target_ in panel["targets"]:  # each column the link reads is one the query returns
            for column in columns:
                assert f'"{column}"' in target_["query"], (column, target_["query"])


@pytest.mark.parametrize("uid", sorted(BY_UID))
def test_every_dashboard_links_to_the_others_keeping_time_and_variables(uid: str) -> None:
    (link,) = BY_UID[uid]["links"]
    assert (link["type"], link["keepTime"], link["includeVars"]) == ("dashboards", True, True)
    assert all(set(link["tags"]) <= set(board["tags"]) for board in BY_UID.values())

"""Every panel, variable, annotation and alert query against a real influxd fed by the pipeline.

A simulated fleet runs through Mosquitto, a gateway and influxd (with an
InfluxDB outage on the way), the cloud detectors add anomalies; then each
query of the committed dashboard JSON and alerting file is expanded the way
Grafana expands it (`dashboards.macros`) and must return data. Alert rules
must also fire during the incident they are about, and not before it.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import gateway.service
from dashboards.generate import PACKAGE_DIR
from dashboards.macros import Selection, TimeRange, expand, interval_ms
from dashboards.provisioning import MIN_INTERVAL
from testkit.servers import InfluxDB1Server, MosquittoServer
from tests.dashboards.fleet_run import STATS_EVERY_S, TERMINALS, FleetRun, run_fleet
from wire.incidents import InjectionType
from wire.timestamps import NS_PER_S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS_PER_MIN = 60 * NS_PER_S
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRun]:
    workdir = tmp_path_factory.mktemp("dashboards")
    with (
        MosquittoServer(workdir / "mosquitto") as broker,
        InfluxDB1Server(workdir / "influxdb") as influx,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(gateway.service, "STATS_EVERY_S", STATS_EVERY_S)
        yield run_fleet(workdir, broker, influx)


def committed(relative: str) -> JSON:
    text = (PACKAGE_DIR / relative).read_text(encoding="utf-8")
    document: JSON = json.loads(text.split("\n", 1)[1] if text.startswith("#") else text)
    return document


# the datasource every `${datasource}` must come to: the provisioned default
(PROVISIONED_UID,) = (
    source["uid"]
    for source in committed("provisioning/datasources/tillpulse.yaml")["datasources"]
    if source["isDefault"]
)


def run(fleet: FleetRun, query: str) -> list[JSON]:
    """The series InfluxDB answers (each with its rows); fails on an InfluxDB error."""
    result = fleet.influx.query(query, db=fleet.database)["results"][0]
    assert "error" not in result, f"{result['error']}: {query}"
    series: list[JSON] = result.get("series", [])
    return series


def label(fleet: FleetRun, kind: InjectionType) -> Any:
    return next(lb for lb in fleet.labels if lb.type is kind)


@dataclass(frozen=True)
class View:
    """A dashboard as a user opens it: a time range and chosen variable values."""

    uid: str
    chosen: dict[str, list[str]]  # variable -> values to pick; a multi variable not named: All

    def time_range(self, fleet: FleetRun) -> TimeRange:
        if self.uid == "tillpulse-pipeline":  # the pipeline's own figures: the wall clock
            return TimeRange.of_ns(fleet.wall_start_ns, fleet.wall_end_ns)
        return TimeRange.of_ns(fleet.sim_start_ns, fleet.sim_end_ns)


def resolve(
    fleet: FleetRun, board: JSON, view: View, time_range: TimeRange
) -> dict[str, Selection]:
    """Each variable's values from its own query, as Grafana fills the drop-downs."""
    selections: dict[str, Selection] = {}
    for variable in board["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "datasource":  # Grafana lists its datasources: the default
            selections[name] = Selection((variable["current"]["value"],))
            continue
        reads(variable, time_range, selections)
        series = run(fleet, expand(variable["query"], time_range, selections))
        values = [row[1] for s in series for row in s["values"]]
        assert values, f"variable ${name} has no values"
        chosen = view.chosen.get(name, values if variable["multi"] else values[:1])
        assert set(chosen) <= set(values), f"${name}: {chosen} not offered in {values}"
        selections[name] = Selection(tuple(chosen), multi=variable["multi"])
    return selections


def reads(user: JSON, time_range: TimeRange, selections: dict[str, Selection]) -> None:
    """``user`` (a panel, target, variable, annotation) reads the provisioned datasource."""
    uid = expand(user["datasource"]["uid"], time_range, selections)
    assert uid == PROVISIONED_UID, user


def views(fleet: FleetRun) -> list[View]:
    tamper = label(fleet, InjectionType.TAMPER)
    site, tampered = tamper.sites[0], tamper.devices[0]
    return [
        View("tillpulse-fleet", {}),  # All sites
        View("tillpulse-fleet", {"site": ["s0000", "s0002"]}),  # two of them: (a|b)
        View("tillpulse-terminal", {"site": [site], "terminal": [tampered]}),
        View("tillpulse-payments", {}),
        View("tillpulse-pipeline", {}),
    ]


def panel_answers(fleet: FleetRun, view: View) -> dict[str, list[JSON]]:
    """Panel title (and refId) -> the series its query returns; plus the annotations."""
    board = committed(f"json/{view.uid}.json")
    time_range = view.time_range(fleet)
    selections = resolve(fleet, board, view, time_range)
    answers: dict[str, list[JSON]] = {}
    for panel in board["panels"]:
        reads(panel, time_range, selections)
        interval = interval_ms(time_range, min_interval=panel.get("interval") or MIN_INTERVAL)
        for target in panel["targets"]:
            reads(target, time_range, selections)
            query = expand(target["query"], time_range, selections, interval=interval)
            answers[f"{panel['title']} ({target['refId']})"] = run(fleet, query)
    for annotation in board["annotations"]["list"]:
        reads(annotation, time_range, selections)
        query = expand(annotation["target"]["query"], time_range, selections)
        answers[f"annotation {annotation['name']}"] = run(fleet, query)
    return answers


def test_every_panel_variable_and_annotation_returns_data(fleet: FleetRun) -> None:
    empty = []
    for view in views(fleet):
        for name, series in panel_answers(fleet, view).items():
            if not any(s.get("values") for s in series):
                empty.append(f"{view.uid} {view.chosen}: {name}")
    assert not empty, "queries that returned nothing:\n" + "\n".join(empty)


def value(series: list[JSON], column: str) -> float:
    """The one value of a single-row answer's ``column``."""
    (only,) = series
    return float(only["values"][0][only["columns"].index(column)])


def test_fleet_overview_counts_every_device_once_online_or_offline(fleet: FleetRun) -> None:
    answers = panel_answers(fleet, View("tillpulse-fleet", {}))
    online = value(answers["Devices online (A)"], "sum")
    offline = value(answers["Devices offline (A)"], "count_sum")
    sensors_with_state = 2
    assert online + offline == TERMINALS + sensors_with_state


def test_the_worst_tables_drill_down_to_values_the_target_dashboard_offers(
    fleet: FleetRun,
) -> None:
    """What a click opens: each row's site (and terminal) chosen on the linked dashboard,
    whose variables must offer them (`resolve` asserts it) and whose panels show data."""
    answers = panel_answers(fleet, View("tillpulse-fleet", {}))
    site = answers["Worst sites (A)"][0]["tags"]["site"]  # a series per site: a row each
    (terminals,) = answers["Worst terminals (lowest approval rate) (A)"]
    assert len(terminals["values"]) == 10
    worst = terminals["values"][0]
    terminal_site, terminal = (worst[terminals["columns"].index(c)] for c in ("site", "device"))
    for view in (
        View("tillpulse-fleet", {"site": [site]}),
        View("tillpulse-terminal", {"site": [terminal_site], "terminal": [terminal]}),
    ):
        answers = panel_answers(fleet, view)
        assert any(s.get("values") for s in answers["Payments (A)"]), view


def test_terminal_detail_shows_the_tamper_alert_of_the_tampered_terminal(fleet: FleetRun) -> None:
    tamper = label(fleet, InjectionType.TAMPER)
    view = View("tillpulse-terminal", {"site": tamper.sites[:1], "terminal": tamper.devices[:1]})
    answers = panel_answers(fleet, view)
    (alerts,) = answers["Alerts (A)"]
    types = {row[alerts["columns"].index("type")] for row in alerts["values"]}
    assert "tamper" in types
    (tamper, *_) = answers["Tamper and offline queue (A)"]
    assert max(row[1] for row in tamper["values"]) == 1


def test_terminal_detail_shows_no_heartbeat_while_the_terminal_was_cut_off(
    fleet: FleetRun,
) -> None:
    cut_off = label(fleet, InjectionType.TERMINAL_OFFLINE)
    view = View("tillpulse-terminal", {"site": cut_off.sites, "terminal": cut_off.devices})
    (heartbeats,) = panel_answers(fleet, view)["Status history (A)"]
    bucket_ns = heartbeats["values"][1][0] - heartbeats["values"][0][0]
    inside = [
        n for t, n in heartbeats["values"] if cut_off.start_ns <= t < cut_off.end_ns - bucket_ns
    ]
    before = [n for t, n in heartbeats["values"] if t + bucket_ns <= cut_off.start_ns]
    assert inside and set(inside) == {0}
    assert before and min(before) > 0


def test_pipeline_health_shows_the_outage_backlog_and_lag(fleet: FleetRun) -> None:
    answers = panel_answers(fleet, View("tillpulse-pipeline", {}))
    (depth,) = answers["Spool depth (lines) (A)"]
    (lag,) = answers["Forwarder lag (A)"]
    assert max(row[1] or 0 for row in depth["values"]) > 0
    assert max(row[1] or 0 for row in lag["values"]) > 0
    (outbox, *_) = answers["Edge outbox depth (A)"]
    assert max(row[1] for row in outbox["values"]) >= 120


# -- alert rules ------------------------------------------------------------------------


def rules() -> dict[str, JSON]:
    (group,) = committed("provisioning/alerting/tillpulse.yaml")["groups"]
    return {rule["uid"]: rule for rule in group["rules"]}


Labels = tuple[tuple[str, str], ...]


def evaluate(fleet: FleetRun, rule: JSON, at_ns: int) -> tuple[dict[Labels, float], bool]:
    """Grafana's evaluation of ``rule`` at ``at_ns``: the compared values by series labels,
    and whether the rule fires.

    Queries run over their windows ending at ``at_ns``; reduce keeps each series' last value;
    math joins series by their labels (a label-less one joins every other); the threshold
    compares.
    """
    results: dict[str, dict[Labels, float]] = {}
    fires = False
    for step in rule["data"]:
        ref, model = step["refId"], step["model"]
        if step["datasourceUid"] != "__expr__":
            window = step["relativeTimeRange"]
            time_range = TimeRange.of_ns(
                at_ns - window["from"] * NS_PER_S, at_ns - window["to"] * NS_PER_S
            )
            results[ref] = {
                tuple(sorted(s.get("tags", {}).items())): next(
                    row[1] for row in reversed(s["values"]) if row[1] is not None
                )
                for s in run(fleet, expand(model["query"], time_range))
            }
        elif model["type"] == "reduce":  # the queries' values are already each series' last
            results[ref] = results[model["expression"]]
        elif model["type"] == "math":
            results[ref] = math(model["expression"], results)
        else:
            evaluator = model["conditions"][0]["evaluator"]
            limit = evaluator["params"][0]
            compared = results[model["expression"]]
            fires = any(
                v > limit if evaluator["type"] == "gt" else v < limit for v in compared.values()
            )
            results[ref] = compared
    return results[rule["condition"]], fires


def math(expression: str, results: dict[str, dict[Labels, float]]) -> dict[Labels, float]:
    """A Grafana math expression: ``$REF``s, numbers, + - * /, comparisons, && and ||."""
    tree = ast.parse(
        expression.replace("$", "").replace("&&", " and ").replace("||", " or "), mode="eval"
    )
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    keys = {key for name in names for key in results[name] if key}

    def walk(node: ast.AST, key: Labels) -> float:  # noqa: PLR0911 - a case per node type
        match node:
            case ast.Expression(body=body):
                return walk(body, key)
            case ast.Name(id=name):
                series = results[name]
                return series[key] if key in series else series[()]
            case ast.Constant(value=int() | float() as number):
                return float(number)
            case ast.BinOp(left=left, op=op, right=right):
                return OPERATORS[type(op)](walk(left, key), walk(right, key))
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                return float(COMPARISONS[type(op)](walk(left, key), walk(right, key)))
            case ast.BoolOp(op=ast.And(), values=values):
                return float(all(walk(v, key) for v in values))
            case ast.BoolOp(op=ast.Or(), values=values):
                return float(any(walk(v, key) for v in values))
        raise AssertionError(f"unsupported in a math expression: {ast.dump(node)}")

    joined: dict[Labels, float] = {}
    for key in keys or {()}:
        try:
            joined[key] = walk(tree, key)
        except KeyError:  # a series with no partner: Grafana drops it too
            continue
    return joined


OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
COMPARISONS: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


@pytest.mark.parametrize(
    ("uid", "incident", "minutes_in"),
    [
        ("tillpulse-terminals-offline", InjectionType.TERMINAL_OFFLINE, 15),
        ("tillpulse-approval-drop", InjectionType.ACQUIRER_OUTAGE, 20),
        ("tillpulse-tamper", InjectionType.TAMPER, 10),
    ],
)
def test_an_alert_rule_fires_during_its_incident_and_not_before(
    fleet: FleetRun, uid: str, incident: InjectionType, minutes_in: int
) -> None:
    rule = rules()[uid]
    start = label(fleet, incident).start_ns
    values, fires = evaluate(fleet, rule, start + minutes_in * NS_PER_MIN)
    assert fires, f"{uid} does not fire {minutes_in} min into {incident}: {values}"
    values, fires = evaluate(fleet, rule, start - 30 * NS_PER_MIN)
    assert values and not fires, f"{uid} fires half an hour before {incident}: {values}"


def test_the_spool_growth_rule_reads_the_gateways_spool_depth(fleet: FleetRun) -> None:
    values, fires = evaluate(fleet, rules()["tillpulse-spool-growth"], fleet.wall_end_ns)
    assert values  # one per gateway; the backlog drained, so it does not fire
    assert not fires


def test_the_run_raised_anomalies_for_the_annotations(fleet: FleetRun) -> None:
    assert fleet.anomalies > 0

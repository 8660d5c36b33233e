"""Small typed builders for Grafana's dashboard JSON model (schemaVersion 39, Grafana 10+).

Plain dataclasses rather than grafana-foundation-sdk: four dashboards of
InfluxQL panels need a dozen fields of the model, and the whole builder fits
on a page, with no generated dependency to pin and upgrade.

Every panel, query variable and annotation reads the datasource a template
variable names (``$datasource``, type ``datasource``, any InfluxDB), never a
uid: the same dashboard works against the provisioned datasource (the
variable's default), the simulated fleet's, or an existing Grafana's InfluxDB
whatever its uid. `Dashboard.for_import` is Grafana's "export for sharing
externally" form of it, for Dashboards > New > Import.

Layout is computed, never written by hand: `Dashboard.json` places panels left
to right in rows of 24 grid units, wrapping when a panel does not fit, so two
panels cannot overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

JSON = dict[str, Any]

DATASOURCE_UID: Final = "tillpulse-influxdb"  # the provisioned one: the variable's default
DATASOURCE_VARIABLE: Final = "datasource"
DATASOURCE: Final[JSON] = {"type": "influxdb", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
# the import's one input: Grafana asks for an InfluxDB datasource and writes its uid
# wherever ${DS_TILLPULSE} stands (here: the datasource variable's default)
IMPORT_INPUT: Final = "DS_TILLPULSE"
MIN_GRAFANA: Final = "10.0.0"
TAG: Final = "tillpulse"  # every dashboard's; the dashboards' links list the dashboards by it
GRID_WIDTH: Final = 24
SCHEMA_VERSION: Final = 39
# panel types as Grafana names them in an export's __requires
PANEL_NAMES: Final = {
    "timeseries": "Time series",
    "stat": "Stat",
    "table": "Table",
    "state-timeline": "State timeline",
    "piechart": "Pie chart",
    "barchart": "Bar chart",
}

PanelType = Literal["timeseries", "stat", "table", "state-timeline", "piechart", "barchart"]
ResultFormat = Literal["time_series", "table"]


@dataclass(frozen=True)
class Query:
    """One raw InfluxQL target; ``alias`` names the series (Grafana's $tag_x patterns work)."""

    influxql: str
    alias: str = ""
    result_format: ResultFormat = "time_series"

    def json(self, ref_id: str) -> JSON:
        target: JSON = {
            "refId": ref_id,
            "datasource": DATASOURCE,
            "query": self.influxql,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            target["alias"] = self.alias
        return target


def dashboard_url(uid: str, variables: tuple[tuple[str, str], ...]) -> str:
    """A link to dashboard ``uid`` keeping the time range and the datasource, setting
    each (variable, value) given (values may be data-link variables)."""
    params = "".join(f"&var-{name}={value}" for name, value in variables)
    # ${__url_time_range} is "from=...&to=...": Grafana leaves the "?" to the link
    return (
        f"/d/{uid}?${{__url_time_range}}"
        f"&var-{DATASOURCE_VARIABLE}=${{{DATASOURCE_VARIABLE}}}{params}"
    )


@dataclass(frozen=True)
class DrillDown:
    """A table column whose cells open dashboard ``uid`` on the clicked row: each
    (variable, column) sets that variable of the target to the row's value of the column."""

    column: str
    title: str
    uid: str
    variables: tuple[tuple[str, str], ...]

    def override(self) -> JSON:
        values = tuple((name, f"${{__data.fields.{col}}}") for name, col in self.variables)
        link = {"title": self.title, "url": dashboard_url(self.uid, values)}
        return {
            "matcher": {"id": "byName", "options": self.column},
            "properties": [{"id": "links", "value": [link]}],
        }


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    type: PanelType = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    min_interval: str = ""  # Grafana's "Min interval": $__interval never goes below it
    options: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)  # fieldConfig.defaults.custom
    decimals: int | None = None
    drill_downs: tuple[DrillDown, ...] = ()

    def json(self, panel_id: int, x: int, y: int) -> JSON:
        defaults: JSON = {"unit": self.unit}
        if self.custom:
            defaults["custom"] = self.custom
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        panel: JSON = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "targets": [q.json(chr(ord("A") + i)) for i, q in enumerate(self.queries)],
            "fieldConfig": {
                "defaults": defaults,
                "overrides": [link.override() for link in self.drill_downs],
            },
            "options": self.options,
        }
        if self.min_interval:
            panel["interval"] = self.min_interval
        return panel


@dataclass(frozen=True)
class Variable:
    """A query variable filled from InfluxQL (``SHOW TAG VALUES ...``)."""

    name: str
    label: str
    influxql: str
    multi: bool = False  # multi-value and "All": used as /^${name:regex}$/ in queries

    def json(self) -> JSON:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": self.influxql,
            "definition": self.influxql,
            "refresh": 2,  # on time range change: new terminals appear
            "sort": 1,
            "multi": self.multi,
            "includeAll": self.multi,
            "current": {},
            "options": [],
            "hide": 0,
        }


def datasource_variable(default_uid: str) -> JSON:
    """The ``$datasource`` variable: any InfluxDB datasource, ``default_uid`` selected.

    Grafana selects the first InfluxDB datasource when ``default_uid`` does not exist
    there, so the dashboards still open in a Grafana whose datasource has another uid.
    """
    return {
        "name": DATASOURCE_VARIABLE,
        "label": "Data source",
        "type": "datasource",
        "query": "influxdb",
        "regex": "",
        "current": {"text": default_uid, "value": default_uid},
        "options": [],
        "refresh": 1,
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


# between all the dashboards, in their header: the time range and the variables carried over
LINKS: Final[list[JSON]] = [
    {
        "title": "tillpulse",
        "type": "dashboards",
        "tags": [TAG],
        "asDropdown": False,
        "keepTime": True,
        "includeVars": True,
        "targetBlank": False,
        "icon": "external link",
        "tooltip": "",
        "url": "",
    }
]


@dataclass(frozen=True)
class Annotation:
    """Events from an InfluxQL query: one per row, the text from ``text_column``."""

    name: str
    influxql: str
    text_column: str
    tags_column: str
    color: str = "red"

    def json(self) -> JSON:
        columns = {"textColumn": self.text_column, "tagsColumn": self.tags_column}
        return {
            "name": self.name,
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": self.color,
            "query": self.influxql,
            **columns,
            # Grafana 10 reads the target; the top-level fields are for older versions
            "target": {"query": self.influxql, "rawQuery": True, "fromAnnotations": True} | columns,
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-24h"
    refresh: str = "1m"

    def json(self, datasource_uid: str = DATASOURCE_UID) -> JSON:
        """The dashboard, its ``$datasource`` defaulting to ``datasource_uid``."""
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG],
            "timezone": "utc",
            "editable": True,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": self.time_from, "to": "now"},
            "refresh": self.refresh,
            "links": LINKS,
            "templating": {
                "list": [datasource_variable(datasource_uid)] + [v.json() for v in self.variables]
            },
            "annotations": {"list": [a.json() for a in self.annotations]},
            "panels": self._laid_out(),
        }

    def for_import(self) -> JSON:
        """Grafana's "export for sharing externally" form: ``__inputs`` asks for an InfluxDB
        datasource at import, whose uid becomes the ``$datasource`` default."""
        requires = [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": MIN_GRAFANA},
            {"type": "datasource", "id": "influxdb", "name": "InfluxDB", "version": "1.0.0"},
        ] + [
            {"type": "panel", "id": kind, "name": PANEL_NAMES[kind], "version": ""}
            for kind in sorted({panel.type for panel in self.panels})
        ]
        source = {
            "name": IMPORT_INPUT,
            "label": "InfluxDB (InfluxQL)",
            "description": "the InfluxDB the tillpulse gateways write to",
            "type": "datasource",
            "pluginId": "influxdb",
            "pluginName": "InfluxDB",
        }
        board = self.json(datasource_uid=f"${{{IMPORT_INPUT}}}")
        return {"__inputs": [source], "__requires": requires} | board

    def _laid_out(self) -> list[JSON]:
        out: list[JSON] = []
        x = y = row_height = 0
        for number, panel in enumerate(self.panels, start=1):
            if panel.width > GRID_WIDTH:
                raise ValueError(f"panel {panel.title!r} is wider than the grid")
            if x + panel.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            out.append(panel.json(number, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        return out


def matches(tag: str, variable: str) -> str:
    """``"tag" =~ /^${variable:regex}$/``: one value, several, or All (every value, joined).

    The explicit ``:regex`` format escapes each value and joins several as
    ``(a|b)`` in every Grafana version, whatever the datasource's own default.
    """
    return f'"{tag}" =~ /^${{{variable}:regex}}$/'

"""Small typed builders for Grafana's dashboard JSON model (schemaVersion 39, Grafana 10+).

Plain dataclasses rather than grafana-foundation-sdk: four dashboards of
InfluxQL panels need a dozen fields of the model, and the whole builder fits
on a page, with no generated dependency to pin and upgrade. Every panel and
query points at one provisioned datasource (`DATASOURCE`), by uid.

Layout is computed, never written by hand: `Dashboard.json` places panels left
to right in rows of 24 grid units, wrapping when a panel does not fit, so two
panels cannot overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

JSON = dict[str, Any]

DATASOURCE_UID: Final = "tillpulse-influxdb"
DATASOURCE: Final[JSON] = {"type": "influxdb", "uid": DATASOURCE_UID}
GRID_WIDTH: Final = 24
SCHEMA_VERSION: Final = 39

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
            "fieldConfig": {"defaults": defaults, "overrides": []},
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

    def json(self) -> JSON:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["tillpulse"],
            "timezone": "utc",
            "editable": True,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": self.time_from, "to": "now"},
            "refresh": self.refresh,
            "templating": {"list": [v.json() for v in self.variables]},
            "annotations": {"list": [a.json() for a in self.annotations]},
            "panels": self._laid_out(),
        }

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

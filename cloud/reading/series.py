"""The numeric series `cloud.detectors.series_watch` watches, each read by a small query of its own.

- sensors: the raw ``sensor`` readings (`SENSOR_FIELDS`) of the shard's sites;
- gateways: the raw ``gateway_stats`` points (`GATEWAY_FIELDS`: cumulative counters
  and gauges, one point per gateway every few seconds), fleet-wide;
- acquirers: the median authorisation latency of each acquirer's online payments per
  window, aggregated by the server, fleet-wide.

Each function returns ``{SeriesId: [(ts_ns, value), ...]}`` in time order; a point whose
value is missing is left out (a gateway figure is a sum over fields, and 0 without any).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from cloud.reading.influxql_reader import InfluxQLReader
from wire.influxql import quote_ident

# door_open is left out: a random 0/1 event, no level to depart from (the detector
# raised it 30 times in 160 simulated sensor-days)
SENSOR_FIELDS: Final = ("temperature_c", "humidity_pct", "mains_power")
GATEWAY_MEASUREMENT: Final = "gateway_stats"  # gateway.metrics.STATS_MEASUREMENT
# A gateway_stats field key -> the figure it adds to; labelled samples are
# ``<family>_<label values>`` (gateway.metrics.GatewayMetrics.stats_line), so the
# messages accepted and the rejections are summed over streams and reasons.
GATEWAY_FIELDS: Final = {
    "messages_accepted": r"messages_.+_accepted",
    "rejected": r"rejected_.+",
    "deadletters_kept": r"deadletters_kept",
    "spool_depth_lines": r"spool_depth_lines",
}
LATENCY_FIELD: Final = "auth_latency_ms"

Points = list[tuple[int, float]]


class Kind(enum.StrEnum):
    SENSOR = "sensor"
    GATEWAY = "gateway"
    ACQUIRER = "acquirer"


@dataclass(frozen=True, slots=True)
class SeriesId:
    """One watched series: a sensor, gateway or acquirer (``name``), one of its fields."""

    kind: Kind
    name: str  # the sensor's device id, the gateway id, the acquirer
    field: str
    site: str = ""  # a sensor's site


def sensor_series(
    reader: InfluxQLReader, start_ns: int, end_ns: int, where: str = ""
) -> dict[SeriesId, Points]:
    """Each sensor's readings in [start, end); ``where``: the shard's sites, or ""."""
    table = reader.select("sensor", ("device", "site", *SENSOR_FIELDS), start_ns, end_ns, where)
    out: dict[SeriesId, Points] = {}
    for field in SENSOR_FIELDS:
        rows = zip(table.time, table["device"], table["site"], table[field], strict=True)
        for ts, device, site, value in rows:
            if value is not None:
                key = SeriesId(Kind.SENSOR, str(device), field, str(site))
                out.setdefault(key, []).append((int(ts), float(value)))
    return out


def gateway_series(reader: InfluxQLReader, start_ns: int, end_ns: int) -> dict[SeriesId, Points]:
    """Each gateway's `GATEWAY_FIELDS` figures (as stored: counters cumulative) in [start, end)."""
    pattern = "|".join(f"(?:{regex})" for regex in GATEWAY_FIELDS.values())
    series = reader.query(
        f"SELECT /^(?:{pattern})$/ FROM {quote_ident(GATEWAY_MEASUREMENT)} "
        f"WHERE time >= {start_ns} AND time < {end_ns} GROUP BY gateway"
    )
    out: dict[SeriesId, Points] = {}
    for part in series:
        gateway = part.tags.get("gateway", "")
        columns: dict[str, list[int]] = {figure: [] for figure in GATEWAY_FIELDS}
        for index, column in enumerate(part.columns[1:], start=1):
            columns[_figure_of(column)].append(index)
        for figure, indexes in columns.items():
            points = out.setdefault(SeriesId(Kind.GATEWAY, gateway, figure), [])
            # no field is 0: a reason or stream is listed once it first happened
            points.extend(
                (int(row[0]), float(sum(row[i] for i in indexes if row[i] is not None)))
                for row in part.values
            )
    return out


def acquirer_latency_series(
    reader: InfluxQLReader, start_ns: int, end_ns: int, window_s: int
) -> dict[SeriesId, Points]:
    """Each acquirer's median online authorisation latency per window in [start, end).

    A point is stamped with its window's start; windows are aligned to the epoch, as
    the detection job's (`cloud.jobs.schedule.window_ends`).
    """
    series = reader.query(
        f"SELECT median({quote_ident(LATENCY_FIELD)}) FROM {quote_ident('payment')} "
        f"WHERE time >= {start_ns} AND time < {end_ns} AND offline = 0 "
        f"GROUP BY time({window_s}s), acquirer fill(none)"
    )
    out: dict[SeriesId, Points] = {}
    for part in series:
        key = SeriesId(Kind.ACQUIRER, part.tags.get("acquirer", ""), LATENCY_FIELD)
        points = out.setdefault(key, [])
        points.extend((int(ts), float(value)) for ts, value in part.values if value is not None)
    return out


def _figure_of(column: str) -> str:
    for figure, regex in GATEWAY_FIELDS.items():
        if re.fullmatch(regex, column):
            return figure
    raise ValueError(f"{GATEWAY_MEASUREMENT} field {column!r} matches none of {GATEWAY_FIELDS}")

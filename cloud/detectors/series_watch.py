"""Series watch: the streaming detector on the numeric series ops care about.

One `StreamingDetector` per (series, field), fed each window's points in time order:

- every sensor's ``temperature_c``, ``humidity_pct`` and ``mains_power`` (0/1: mains lost);
  not ``door_open``, a random event with no level (`cloud.reading.series.SENSOR_FIELDS`);
- each gateway's rates of messages accepted, rejected and dead-lettered (per second,
  from its cumulative counters) and its spool depth (lines not yet in InfluxDB);
- each acquirer's median authorisation latency per window.

A point scoring at or above ``threshold`` on ``confirm_points`` consecutive points is a
`series_anomaly` finding (WARNING) for its sensor, gateway or acquirer, naming the field,
the value, its usual range and the score. A series that has not moved at all lately (no
rejections, mains always on) is idle, not stuck: its unchanged value is not raised (the
detector takes a run of unchanged values the whole history long for a stuck sensor).

Root cause: an acquirer that is down this window is the outage's (its latency is neither
raised nor learned); a sensor that is offline this window is not raised. Sensors are the
shard's, gateways and acquirers the lead shard's.

State: the detectors live in memory only. The first cycle warms them up from the stored
history before its window (``warmup_s``, a day: more than the probation of every kind),
so a restart neither forgets what it learned nor alarms while it learns again; windows
skipped later (a replay of trading hours only) are caught up the same way. At most
``max_series`` series are watched (about 240 KiB each).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from cloud.detectors.findings import Finding
from cloud.detectors.streaming import StreamingDetector
from cloud.reading.influxql_reader import InfluxQLReader
from cloud.reading.series import (
    LATENCY_FIELD,
    Kind,
    Points,
    SeriesId,
    acquirer_latency_series,
    gateway_series,
    sensor_series,
)
from cloud.reading.window import Shard, WindowData
from runtime.logs import kv
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_S, iso

log = logging.getLogger(__name__)

COUNTERS: Final = frozenset({"messages_accepted", "rejected", "deadletters_kept"})
_USUAL_POINTS: Final = 288  # recent unremarkable values behind "usually a to b"


@dataclass(frozen=True, slots=True)
class SeriesSettings:
    enabled: bool = True
    threshold: float = 0.95  # score; a tail probability of about 1e-4 (streaming.py)
    confirm_points: int = 2  # consecutive points at or above it (one odd reading is not raised)
    # history read once at start: 200 five-minute latency medians (the probation) and
    # 1000 minutely sensor readings (a full calibration history) are 16.7 h each
    warmup_s: int = 24 * 3600
    max_series: int = 2000


@dataclass(slots=True)
class _Watched:
    detector: StreamingDetector
    last_ns: int = 0
    run: int = 0  # consecutive points at or above the threshold
    usual: deque[float] = field(default_factory=lambda: deque(maxlen=_USUAL_POINTS))
    counter: tuple[int, float] | None = None  # a counter's previous (ts, total)


@dataclass(frozen=True, slots=True)
class _Hit:
    series: SeriesId
    ts_ns: int
    value: float
    score: float
    usual: tuple[float, float] | None


class SeriesWatch:
    def __init__(
        self, reader: InfluxQLReader, settings: SeriesSettings, window_s: int, shard: Shard
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.window_s = window_s
        self.shard = shard
        self._series: dict[SeriesId, _Watched] = {}
        self._fed_to_ns = 0  # the end of the newest window fed (0: none yet)

    @property
    def watched(self) -> int:
        return len(self._series)

    def findings(self, data: WindowData, found: list[Finding], down: set[str]) -> list[Finding]:
        """This window's series anomalies; ``found``: the other detectors' findings."""
        if self._fed_to_ns < data.start_ns:  # the first window, or windows skipped
            self._catch_up(data.start_ns, data.site_where)
        self._fed_to_ns = data.end_ns
        read = sensor_series(self.reader, data.start_ns, data.end_ns, data.site_where)
        if self.shard.leads:
            read |= gateway_series(self.reader, data.start_ns, data.end_ns)
            read |= {
                SeriesId(Kind.ACQUIRER, name, LATENCY_FIELD): [
                    (data.start_ns, acq.latency_median_ms)
                ]
                for name, acq in data.acquirers.items()
                if acq.latency_median_ms is not None and name not in down
            }
        hits = self._feed(read)
        # offline as terminal_health judges it (a broker's will alone is no proof: a will
        # carries its connect time, and readings may follow it)
        offline = {f.device for f in found if f.type == AlertType.TERMINAL_OFFLINE and f.device}
        sites_down = {f.site for f in found if f.type == AlertType.SITE_NETWORK and f.site}
        kept = [
            hit
            for hit in hits
            if hit.series.kind is not Kind.SENSOR
            or (hit.series.name not in offline and hit.series.site not in sites_down)
        ]
        return _findings(kept, data.end_ns)

    def _catch_up(self, start_ns: int, site_where: str) -> None:
        """Learn from the stored history the windows did not bring, nothing raised: up to
        ``warmup_s`` before the first window, and the span of any windows skipped (a
        replay of trading hours only, a paused job), so the morning after a night not
        watched is not a jump from last evening's readings."""
        started = time.monotonic()
        begin = max(self._fed_to_ns, start_ns - self.settings.warmup_s * NS_PER_S)
        read = sensor_series(self.reader, begin, start_ns, site_where)
        if self.shard.leads:
            read |= gateway_series(self.reader, begin, start_ns)
            read |= acquirer_latency_series(self.reader, begin, start_ns, self.window_s)
        self._feed(read)
        for watched in self._series.values():
            watched.run = 0
        log.info(
            "series_caught_up",
            extra=kv(
                span_s=(start_ns - begin) // NS_PER_S,
                series=len(self._series),
                points=sum(len(points) for points in read.values()),
                seconds=round(time.monotonic() - started, 3),
            ),
        )

    def _feed(self, read: dict[SeriesId, Points]) -> list[_Hit]:
        """Every point into its series' detector; the confirmed hits, the top one per series."""
        hits: list[_Hit] = []
        refused = 0
        # the few fleet-wide series first: sensors must not crowd them out of the cap
        for series in sorted(read, key=lambda s: s.kind is Kind.SENSOR):
            watched = self._series.get(series)
            if watched is None:
                if len(self._series) >= self.settings.max_series:
                    refused += 1
                    continue
                watched = self._series[series] = _Watched(StreamingDetector(seasonal=False))
            hit = self._score(series, watched, read[series])
            if hit is not None:
                hits.append(hit)
        if refused:
            log.warning(
                "series_not_watched",
                extra=kv(series=refused, max_series=self.settings.max_series),
            )
        return hits

    def _score(self, series: SeriesId, watched: _Watched, points: Points) -> _Hit | None:
        settings = self.settings
        top: _Hit | None = None
        for ts_ns, value in _values(series, watched, points):
            if ts_ns < watched.last_ns:
                continue  # already fed (an overlapping read): the detector never goes back
            watched.last_ns = ts_ns
            score = watched.detector.update(ts_ns / NS_PER_S, value)
            if score < settings.threshold or _idle(watched.usual, value):
                watched.run = 0
                watched.usual.append(value)
                continue
            watched.run += 1
            if watched.run >= settings.confirm_points and (top is None or score > top.score):
                top = _Hit(series, ts_ns, value, score, _usual(watched.usual))
        return top


def _values(series: SeriesId, watched: _Watched, points: Points) -> Iterable[tuple[int, float]]:
    """The points as the detector sees them: a counter as its rate per second."""
    if series.field not in COUNTERS:
        yield from points
        return
    for ts_ns, total in points:
        previous, watched.counter = watched.counter, (ts_ns, total)
        if previous is None or ts_ns <= previous[0] or total < previous[1]:
            continue  # the first, or the gateway restarted (its counters start again)
        yield ts_ns, (total - previous[1]) * NS_PER_S / (ts_ns - previous[0])


def _idle(usual: deque[float], value: float) -> bool:
    """The series has not moved lately, and still does not."""
    return bool(usual) and min(usual) == value == max(usual)


def _usual(values: deque[float]) -> tuple[float, float] | None:
    """The 5th to 95th percentile of the recent unremarkable values."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[len(ranked) // 20], ranked[(len(ranked) * 19) // 20]


def _findings(hits: list[_Hit], end_ns: int) -> list[Finding]:
    """One finding per sensor, gateway or acquirer, naming each field that is out."""
    by_subject: dict[tuple[Kind, str, str], list[_Hit]] = {}
    for hit in hits:
        series = hit.series
        by_subject.setdefault((series.kind, series.name, series.site), []).append(hit)
    out = []
    for (kind, name, site), found in by_subject.items():
        found.sort(key=lambda h: -h.score)
        where = f"sensor {name} at site {site}" if kind is Kind.SENSOR else f"{kind} {name}"
        out.append(
            Finding(
                type=AlertType.SERIES_ANOMALY,
                detector=f"series.{kind}",
                severity=Severity.WARNING,
                score=found[0].score,
                ts=end_ns,
                site=site or None,
                device=name if kind is Kind.SENSOR else None,
                acquirer=name if kind is Kind.ACQUIRER else None,
                subject=f"gateway:{name}" if kind is Kind.GATEWAY else None,
                summary=f"{where}: " + "; ".join(_described(hit) for hit in found),
                evidence={
                    "field": found[0].series.field,
                    "value": found[0].value,
                    **_range_evidence(found[0].usual),
                },
            )
        )
    return out


def _described(hit: _Hit) -> str:
    unit = " per s" if hit.series.field in COUNTERS else ""
    usual = (
        "no usual range yet"
        if hit.usual is None
        else f"usually {hit.usual[0]:.4g} to {hit.usual[1]:.4g}{unit}"
    )
    return (
        f"{hit.series.field} {hit.value:.4g}{unit} at {iso(hit.ts_ns)}, {usual} "
        f"(anomaly score {hit.score:.2f})"
    )


def _range_evidence(usual: tuple[float, float] | None) -> dict[str, float]:
    return {} if usual is None else {"usual_low": usual[0], "usual_high": usual[1]}

"""Score the cloud jobs' alerts against firmware_sim's ground truth.

`evaluate` is pure: alerts and labels in, a `Report` out (per label type
precision, recall, F1 and detection delay, plus what was missed and what was
false); `render_table` / `print_report` and `report_json` show it.

Matching rules:

* Only ``firing`` alerts count. Several firing messages with one ``alert_id``
  (a severity escalation) are one alert: the earliest at warning or above.
  An alert that never rose above ``info`` (a surge on a sale day the operator
  calendar announced) is a note, not an alert: counted in ``notes``, never
  false, never a detection.
* An alert *overlaps* a label when its ``ts`` lies in ``[start, end + grace)``
  (grace defaults to 2 windows: a detection after the end is late, not false)
  and its subject is one of the label's targets: its device if it names one,
  else its site, else its acquirer. An alert naming none of them is fleet-wide
  and overlaps every label in time.
* A label's type is an injection type or an alert type (`wire.labels`). An
  alert *matches* a label when it overlaps it and its type equals the label's
  type or detects it (`wire.incidents.DETECTS` maps the alert type to the
  label's injection type): `wire.labels.label_matches`.
* Per label type (a row): ``alerts`` are the firing alerts counted in it: an
  alert is counted under its own type when some label has that type, else
  under the injection type `DETECTS` maps it to (so firmware_sim's labels,
  all injection types, give the rows they always gave: a ``site_network``
  alert counts under ``network_flapping``, unless the labels include
  ``site_network`` ones). ``true_alerts`` are those matching a label; a label
  is ``detected`` by at least one matching alert. precision = true alerts /
  alerts, recall = detected / labels, F1 their harmonic mean (0 when both are 0). A figure without a
  denominator is None ("n/a"), never a conventional 0 or 1: no alerts ->
  precision n/a (and F1 0 if there were labels); no labels -> recall and F1 n/a.
* Detection delay of a detected label: its first matching alert's ts minus the
  label's start, in seconds and in windows.
* Types in `NOT_IN_THE_DATA` are listed as not scored (the gateway absorbs
  them; no detector can see them); they count in no overall figure and are not
  listed as missed.
* Overall: macro F1 over the scored types that have labels, micro precision and
  recall over the scored types, median delay over all detections.
* An alert matching no label of its own type is ``unexplained_by_type`` (it
  costs its type precision; a type mapping to nothing, like low_battery, is
  always unexplained). One that overlaps no label at all, whatever the type, is
  a ``false_alert``: the fleet-wide figure, also per 1,000 terminal-hours.
  `Report.false_alerts` lists every unexplained alert with the labels it
  overlaps (none: a false alert).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

import msgspec
from rich.console import Console
from rich.table import Table

from wire.errors import MessageDecodeError
from wire.incidents import DETECTS, NOT_IN_THE_DATA, AlertType, InjectionType
from wire.labels import GroundTruthLabel, label_matches
from wire.messages import Alert, AlertStatus, Severity, decode_as
from wire.timestamps import NS_PER_S, iso

NOT_SCORED_NOTE: Final = "not scored: absorbed by the gateway"

_MAPS_TO: Final[dict[str, str]] = {str(alert): kind for alert, kind in DETECTS.items()}
# rows: injection types in their order, then alert types that are no injection type
_ORDER: Final[dict[str, int]] = {
    name: n
    for n, name in enumerate(dict.fromkeys([*map(str, InjectionType), *map(str, AlertType)]))
}


class Delay(msgspec.Struct, kw_only=True, frozen=True):
    """Detection delays: first matching alert's ts - label start."""

    median_s: float
    max_s: float
    median_windows: float
    max_windows: float


class TypeRow(msgspec.Struct, kw_only=True, frozen=True):
    type: str  # a label type: an injection type or an alert type (wire.labels.LabelType)
    scored: bool
    labels: int
    detected: int
    alerts: int
    true_alerts: int
    precision: float | None
    recall: float | None
    f1: float | None
    delay: Delay | None  # None: nothing detected
    note: str = ""


class Overall(msgspec.Struct, kw_only=True, frozen=True):
    labels: int  # scored types only, like every figure up to delay
    detected: int
    alerts: int
    true_alerts: int
    macro_f1: float | None
    micro_precision: float | None
    micro_recall: float | None
    delay: Delay | None  # over all detections of scored types
    firing_alerts: int  # distinct firing alerts of any type, at warning or above
    notes: int  # distinct firing alerts that stayed at info severity
    false_alerts: int  # overlapping no label at all
    unexplained_by_type: int  # matching no label of their own type
    terminal_hours: float
    false_per_1000h: float
    unexplained_per_1000h: float


class MissedLabel(msgspec.Struct, kw_only=True, frozen=True):
    label_id: str
    type: str
    start: str  # ISO-8601 UTC
    end: str
    sites: list[str]
    devices: list[str]
    acquirers: list[str]


class FalseAlert(msgspec.Struct, kw_only=True, frozen=True):
    alert_id: str
    type: str
    ts: str  # ISO-8601 UTC
    site: str | None
    device: str | None
    acquirer: str | None
    overlaps: list[str]  # label ids it overlaps in subject and time; empty: a false alert


class Report(msgspec.Struct, kw_only=True, frozen=True):
    window_s: float
    grace_s: float
    rows: list[TypeRow]
    overall: Overall
    missed: list[MissedLabel]
    false_alerts: list[FalseAlert]


class _Scope(NamedTuple):
    """A label's targets as sets and its window widened by the grace."""

    label: GroundTruthLabel
    sites: frozenset[str]
    devices: frozenset[str]
    acquirers: frozenset[str]
    until_ns: int

    def overlaps(self, alert: Alert) -> bool:
        if not self.label.start_ns <= alert.ts < self.until_ns:
            return False
        if alert.device is not None:
            return alert.device in self.devices
        if alert.site is not None:
            return alert.site in self.sites
        if alert.acquirer is not None:
            return alert.acquirer in self.acquirers
        return True  # fleet-wide


def evaluate(
    alerts: Sequence[Alert],
    labels: Sequence[GroundTruthLabel],
    *,
    window_s: float,
    terminal_hours: float,
    grace_s: float | None = None,
) -> Report:
    """Score ``alerts`` against ``labels`` (rules in the module docstring)."""
    if window_s <= 0 or terminal_hours <= 0:
        raise ValueError("window_s and terminal_hours must be positive")
    grace = 2 * window_s if grace_s is None else grace_s
    grace_ns = round(grace * NS_PER_S)
    scopes = [
        _Scope(
            label,
            frozenset(label.sites),
            frozenset(label.devices),
            frozenset(label.acquirers),
            label.end_ns + grace_ns,
        )
        for label in labels
    ]
    firing, notes = _distinct_firing(alerts)
    first_hit: dict[int, int] = {}  # index into labels -> ts of its first matching alert
    alerts_by_type: Counter[str] = Counter()
    true_by_type: Counter[str] = Counter()
    unexplained: list[FalseAlert] = []
    label_kinds = {label.type.value for label in labels}
    for alert in firing:  # in ts order, so the first hit is the earliest
        kind = alert.type if alert.type in label_kinds else _MAPS_TO.get(alert.type)
        overlapping = [n for n, scope in enumerate(scopes) if scope.overlaps(alert)]
        matching = [n for n in overlapping if label_matches(alert.type, labels[n].type)]
        if kind is not None:
            alerts_by_type[kind] += 1
        if kind is not None and matching:
            true_by_type[kind] += 1
            for n in matching:
                first_hit.setdefault(n, alert.ts)
        else:
            unexplained.append(_false_alert(alert, [labels[n].label_id for n in overlapping]))

    delays_by_type: dict[str, list[float]] = {}
    for n, ts in first_hit.items():
        delay_s = (ts - labels[n].start_ns) / NS_PER_S
        delays_by_type.setdefault(labels[n].type.value, []).append(delay_s)
    labels_by_type = Counter(label.type.value for label in labels)
    kinds = sorted(labels_by_type.keys() | alerts_by_type.keys(), key=lambda k: _ORDER.get(k, 99))
    rows = [
        _row(
            kind,
            labels=labels_by_type[kind],
            alerts=alerts_by_type[kind],
            true_alerts=true_by_type[kind],
            delays_s=delays_by_type.get(kind, []),
            window_s=window_s,
        )
        for kind in kinds
    ]
    missed = [
        _missed(label)
        for n, label in enumerate(labels)
        if n not in first_hit and label.type.value not in NOT_IN_THE_DATA
    ]
    false_count = sum(not entry.overlaps for entry in unexplained)
    scored = [row for row in rows if row.scored]
    f1s = [row.f1 for row in scored if row.f1 is not None]
    all_delays = [
        d for kind, ds in delays_by_type.items() if kind not in NOT_IN_THE_DATA for d in ds
    ]
    overall = Overall(
        labels=sum(row.labels for row in scored),
        detected=sum(row.detected for row in scored),
        alerts=sum(row.alerts for row in scored),
        true_alerts=sum(row.true_alerts for row in scored),
        macro_f1=statistics.fmean(f1s) if f1s else None,
        micro_precision=_ratio(sum(r.true_alerts for r in scored), sum(r.alerts for r in scored)),
        micro_recall=_ratio(sum(r.detected for r in scored), sum(r.labels for r in scored)),
        delay=_delay(all_delays, window_s),
        firing_alerts=len(firing),
        notes=notes,
        false_alerts=false_count,
        unexplained_by_type=len(unexplained),
        terminal_hours=terminal_hours,
        false_per_1000h=false_count * 1000 / terminal_hours,
        unexplained_per_1000h=len(unexplained) * 1000 / terminal_hours,
    )
    return Report(
        window_s=window_s,
        grace_s=grace,
        rows=rows,
        overall=overall,
        missed=missed,
        false_alerts=unexplained,
    )


def _distinct_firing(alerts: Sequence[Alert]) -> tuple[list[Alert], int]:
    """Firing alerts in ts order, each alert_id once (its earliest firing message at
    warning or above), and how many alert_ids never rose above info (notes)."""
    seen: set[str] = set()
    informed: set[str] = set()
    distinct: list[Alert] = []
    for alert in sorted(alerts, key=lambda a: a.ts):
        if alert.status is not AlertStatus.FIRING or alert.alert_id in seen:
            continue
        if alert.severity is Severity.INFO:
            informed.add(alert.alert_id)
            continue
        seen.add(alert.alert_id)
        distinct.append(alert)
    return distinct, len(informed - seen)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _delay(delays_s: list[float], window_s: float) -> Delay | None:
    if not delays_s:
        return None
    median, longest = statistics.median(delays_s), max(delays_s)
    return Delay(
        median_s=median,
        max_s=longest,
        median_windows=median / window_s,
        max_windows=longest / window_s,
    )


def _row(
    kind: str, *, labels: int, alerts: int, true_alerts: int, delays_s: list[float], window_s: float
) -> TypeRow:
    scored = kind not in NOT_IN_THE_DATA
    precision = _ratio(true_alerts, alerts) if scored else None
    recall = _ratio(len(delays_s), labels) if scored else None
    f1: float | None = None
    if recall is not None:  # no alerts: precision n/a, recall 0, F1 0
        p = precision or 0.0
        f1 = 2 * p * recall / (p + recall) if p + recall else 0.0
    return TypeRow(
        type=kind,
        scored=scored,
        labels=labels,
        detected=len(delays_s),
        alerts=alerts,
        true_alerts=true_alerts,
        precision=precision,
        recall=recall,
        f1=f1,
        delay=_delay(delays_s, window_s) if scored else None,
        note="" if scored else NOT_SCORED_NOTE,
    )


def _missed(label: GroundTruthLabel) -> MissedLabel:
    return MissedLabel(
        label_id=label.label_id,
        type=label.type.value,
        start=label.start,
        end=label.end,
        sites=list(label.sites),
        devices=list(label.devices),
        acquirers=list(label.acquirers),
    )


def _false_alert(alert: Alert, overlaps: list[str]) -> FalseAlert:
    return FalseAlert(
        alert_id=alert.alert_id,
        type=alert.type,
        ts=iso(alert.ts),
        site=alert.site,
        device=alert.device,
        acquirer=alert.acquirer,
        overlaps=overlaps,
    )


def targets_check(
    report: Report, *, min_f1: float, max_median_delay_windows: float, max_false_per_1000h: float
) -> list[str]:
    """The targets ``report`` misses, in words; empty when all are met.

    With no scored labels the F1 and delay targets hold vacuously.
    """
    misses: list[str] = []
    for row in report.rows:
        if row.scored and row.labels and (row.f1 or 0.0) < min_f1:
            misses.append(
                f"{row.type}: F1 {_fmt(row.f1)} < {min_f1} "
                f"(precision {_fmt(row.precision)}, recall {_fmt(row.recall)})"
            )
    overall = report.overall
    delay = overall.delay.median_windows if overall.delay else None
    if delay is None and overall.labels:
        misses.append("no label detected: the median detection delay is undefined")
    elif delay is not None and delay > max_median_delay_windows:
        misses.append(
            f"median detection delay {delay:.2f} windows > {max_median_delay_windows} windows"
        )
    if overall.false_per_1000h > max_false_per_1000h:
        misses.append(
            f"{overall.false_per_1000h:.2f} false alerts per 1,000 terminal-hours "
            f"> {max_false_per_1000h} ({overall.false_alerts} in {overall.terminal_hours:,.0f} h)"
        )
    return misses


def report_json(report: Report) -> bytes:
    return msgspec.json.encode(report)


def read_alerts_jsonl(path: str | Path) -> list[Alert]:
    """One encoded Alert per line (``--alerts-out``); a bad line raises ValueError naming it."""
    alerts: list[Alert] = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                alerts.append(decode_as(line, Alert))
            except MessageDecodeError as exc:
                raise ValueError(f"alert file {path}, line {number}: {exc}") from None
    return alerts


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_delays(delay: Delay | None) -> tuple[str, str]:
    if delay is None:
        return "n/a", "n/a"
    return (
        f"{delay.median_s:,.0f} s ({delay.median_windows:.1f} w)",
        f"{delay.max_s:,.0f} s ({delay.max_windows:.1f} w)",
    )


def render_table(report: Report) -> Table:
    """Per label type figures and the overall line."""
    table = Table(title="tillpulse cloud evaluate", show_header=True)
    for name in ("type", "labels", "detected", "alerts", "true", "precision", "recall", "F1"):
        table.add_column(name, justify="left" if name == "type" else "right")
    table.add_column("median delay", justify="right")
    table.add_column("max delay", justify="right")
    table.add_column("note")
    for row in report.rows:
        table.add_row(
            row.type,
            str(row.labels),
            str(row.detected),
            str(row.alerts),
            str(row.true_alerts),
            _fmt(row.precision),
            _fmt(row.recall),
            _fmt(row.f1),
            *_fmt_delays(row.delay),
            row.note,
        )
    o = report.overall
    table.add_row(
        "overall",
        str(o.labels),
        str(o.detected),
        str(o.alerts),
        str(o.true_alerts),
        _fmt(o.micro_precision),
        _fmt(o.micro_recall),
        _fmt(o.macro_f1),
        *_fmt_delays(o.delay),
        "micro precision / recall, macro F1",
        style="bold",
        end_section=True,
    )
    table.caption = (
        f"false alerts: {o.false_alerts} ({o.false_per_1000h:.2f} per 1,000 terminal-hours "
        f"over {o.terminal_hours:,.0f} h); unexplained by type: {o.unexplained_by_type}; "
        f"notes (info only): {o.notes}; window {report.window_s:g} s, grace {report.grace_s:g} s"
    )
    return table


def print_report(report: Report, console: Console, *, limit: int = 20) -> None:
    """The table, then the first ``limit`` missed labels and unexplained alerts."""
    console.print(render_table(report))
    if report.missed:
        missed = Table(title=f"missed labels ({len(report.missed)})")
        for name in ("label", "type", "window", "targets"):
            missed.add_column(name)
        for label in report.missed[:limit]:
            missed.add_row(
                label.label_id, label.type, f"{label.start} .. {label.end}", _targets(label)
            )
        console.print(missed)
        _more(console, len(report.missed), limit)
    if report.false_alerts:
        false = Table(title=f"unexplained alerts ({len(report.false_alerts)})")
        for name in ("alert", "type", "ts", "subject", "overlaps labels"):
            false.add_column(name)
        for alert in report.false_alerts[:limit]:
            subject = alert.device or alert.site or alert.acquirer or "fleet"
            overlaps = ", ".join(alert.overlaps) or "none: a false alert"
            false.add_row(alert.alert_id, alert.type, alert.ts, subject, overlaps)
        console.print(false)
        _more(console, len(report.false_alerts), limit)


def _more(console: Console, total: int, limit: int) -> None:
    if total > limit:
        console.print(f"... and {total - limit} more (see the JSON)")


def _targets(label: MissedLabel) -> str:
    parts: list[str] = []
    for ids, noun in (
        (label.acquirers, "acquirers"),
        (label.sites, "sites"),
        (label.devices, "devices"),
    ):
        if ids:
            parts.append(", ".join(ids) if len(ids) <= 3 else f"{len(ids)} {noun}")
    return "; ".join(parts)

"""Ground truth: one JSONL line per labelled incident, read by the anomaly evaluation.

Each line is a `GroundTruthLabel`: the incident's type, the concrete ids it
hit (sites, devices, acquirers, card tokens), its window as nanoseconds and
ISO-8601 UTC, and the parameters it ran with. ``end`` is exclusive.

A label's ``type`` is either an injection type (`wire.incidents.InjectionType`:
what firmware_sim injects, and writes as labels) or an alert type
(`wire.incidents.AlertType`: what the cloud raises), so a vendor can label its
own incidents by the alert it expects (``site_network``, ``terminal_offline``,
``low_battery``...). A name that is both (``tamper``, ``paper_out``...) is read
as the injection type; since the alert type of the same name detects that
injection (`wire.incidents.DETECTS`), it still matches that alert. An alert
matches a label's type when the alert's type equals it, or `DETECTS` maps the
alert's type to it (`label_matches`). Any other ``type`` is an error naming
the line and the accepted values.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

from wire.incidents import DETECTS, AlertType, InjectionType
from wire.timestamps import iso

Param = float | int | str
LabelType = InjectionType | AlertType

_INJECTION_NAMES: Final = frozenset(str(kind) for kind in InjectionType)
_ALERT_NAMES: Final = frozenset(str(kind) for kind in AlertType)


def label_type(name: str) -> LabelType:
    """The label type called ``name``: an injection type first, else an alert type.

    Raises ValueError naming the accepted values.
    """
    if name in _INJECTION_NAMES:
        return InjectionType(name)
    if name in _ALERT_NAMES:
        return AlertType(name)
    raise ValueError(
        f"unknown label type {name!r} at `$.type`: expected an injection type "
        f"({', '.join(InjectionType)}) or an alert type ({', '.join(AlertType)})"
    )


def label_matches(alert_type: str, kind: LabelType) -> bool:
    """Whether an alert of ``alert_type`` detects a label of type ``kind``."""
    if alert_type == kind.value:
        return True
    detected = DETECTS.get(AlertType(alert_type)) if alert_type in _ALERT_NAMES else None
    return detected is not None and detected.value == kind.value


class _Label(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every field of a label but its ``type``."""

    label_id: str  # "<scenario>-<index>" for firmware_sim's labels; any string otherwise
    sites: list[str]
    devices: list[str]
    acquirers: list[str] = msgspec.field(default_factory=list)
    card_tokens: list[str] = msgspec.field(default_factory=list)
    start_ns: int
    end_ns: int
    start: str  # ISO-8601 UTC
    end: str
    params: dict[str, Param] = msgspec.field(default_factory=dict)


class GroundTruthLabel(_Label, kw_only=True, frozen=True):
    type: LabelType  # an InjectionType, or an AlertType when the name is no injection type

    def covers(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


class _LabelLine(_Label, kw_only=True, frozen=True):
    """A label as read: ``type`` a plain string, resolved by `label_type`
    (msgspec cannot decode a union of two string enums)."""

    type: str


def make_label(
    label_id: str,
    kind: LabelType,
    window: tuple[int, int],
    *,
    sites: Iterable[str],
    devices: Iterable[str],
    acquirers: Iterable[str] = (),
    card_tokens: Iterable[str] = (),
    params: dict[str, Param] | None = None,
) -> GroundTruthLabel:
    start_ns, end_ns = window
    return GroundTruthLabel(
        label_id=label_id,
        type=kind,
        sites=sorted(set(sites)),
        devices=sorted(set(devices)),
        acquirers=sorted(set(acquirers)),
        card_tokens=sorted(set(card_tokens)),
        start_ns=start_ns,
        end_ns=end_ns,
        start=iso(start_ns),
        end=iso(end_ns),
        params=dict(params or {}),
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_LabelLine)


def write_labels(path: str | Path, labels: Iterable[GroundTruthLabel]) -> int:
    """Write one label per line; returns how many."""
    lines = [_encoder.encode(label) + b"\n" for label in labels]
    Path(path).write_bytes(b"".join(lines))
    return len(lines)


def decode_label(line: bytes) -> GroundTruthLabel:
    """One label line; raises ValueError (one line of text) when it is not a label."""
    try:
        raw = _decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(str(exc)) from None
    fields = msgspec.structs.asdict(raw)
    fields["type"] = label_type(raw.type)
    return GroundTruthLabel(**fields)


def read_labels(path: str | Path) -> list[GroundTruthLabel]:
    """Read a label file; a bad line raises ValueError naming the file and line."""
    labels: list[GroundTruthLabel] = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                labels.append(decode_label(line))
            except ValueError as exc:
                raise ValueError(f"label file {path}, line {number}: {exc}") from None
    return labels

"""Ground truth: one JSONL line per injection, read by the anomaly evaluation.

Each line is a `GroundTruthLabel`: the injection type, the concrete ids it
hit (sites, devices, acquirers, card tokens), its window as nanoseconds and
ISO-8601 UTC, and the parameters it ran with. ``end`` is exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from wire.incidents import InjectionType
from wire.timestamps import iso

Param = float | int | str


class GroundTruthLabel(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    label_id: str  # "<scenario>-<index>"
    type: InjectionType
    sites: list[str]
    devices: list[str]
    acquirers: list[str] = msgspec.field(default_factory=list)
    card_tokens: list[str] = msgspec.field(default_factory=list)
    start_ns: int
    end_ns: int
    start: str  # ISO-8601 UTC
    end: str
    params: dict[str, Param] = msgspec.field(default_factory=dict)

    def covers(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


def make_label(
    label_id: str,
    kind: InjectionType,
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
_decoder = msgspec.json.Decoder(GroundTruthLabel)


def write_labels(path: str | Path, labels: Iterable[GroundTruthLabel]) -> int:
    """Write one label per line; returns how many."""
    lines = [_encoder.encode(label) + b"\n" for label in labels]
    Path(path).write_bytes(b"".join(lines))
    return len(lines)


def read_labels(path: str | Path) -> list[GroundTruthLabel]:
    """Read a label file; a bad line raises ValueError naming the file and line."""
    labels: list[GroundTruthLabel] = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                labels.append(_decoder.decode(line))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise ValueError(f"label file {path}, line {number}: {exc}") from None
    return labels

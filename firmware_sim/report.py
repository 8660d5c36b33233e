"""What a run did: counters while it runs, and the closing summary."""

from __future__ import annotations

from collections import Counter

import msgspec
from rich.console import Console
from rich.table import Table

from firmware_sim.event_engine import LinkChange, SimEvent
from wire.labels import GroundTruthLabel


class RunStats(msgspec.Struct, kw_only=True):
    events: dict[str, int] = msgspec.field(default_factory=dict)  # by message type
    link_changes: dict[str, int] = msgspec.field(default_factory=dict)  # by reason
    duplicates: int = 0
    corrupted: int = 0
    published: int = 0  # MQTT publishes (events, duplicates, states, mangled payloads)
    acknowledged: int = 0  # PUBACKs received
    refused: int = 0  # PUBACKs with a failure reason (ACL, quota): the broker did not take it
    written: int = 0  # JSONL lines written
    injections: dict[str, int] = msgspec.field(default_factory=dict)  # by type
    wall_s: float = 0.0
    simulated_s: float = 0.0

    def count(self, event: SimEvent) -> None:
        if isinstance(event, LinkChange):
            key = event.reason.value
            self.link_changes[key] = self.link_changes.get(key, 0) + 1
            return
        name = type(event.message).__name__
        self.events[name] = self.events.get(name, 0) + 1
        self.duplicates += event.duplicate
        self.corrupted += event.corrupt

    def add_labels(self, labels: list[GroundTruthLabel]) -> None:
        self.injections = dict(sorted(Counter(label.type.value for label in labels).items()))

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def events_per_s(self) -> float:
        return self.total_events / self.wall_s if self.wall_s > 0 else 0.0


def render_summary(stats: RunStats, console: Console) -> None:
    table = Table(title="tillpulse sim: summary", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in sorted(stats.events.items()):
        table.add_row(f"events: {name}", f"{value:,}")
    for name, value in sorted(stats.link_changes.items()):
        table.add_row(f"state: {name}", f"{value:,}")
    table.add_row("duplicate sends", f"{stats.duplicates:,}")
    table.add_row("corrupted", f"{stats.corrupted:,}")
    for name, value in stats.injections.items():
        table.add_row(f"injection: {name}", f"{value:,}")
    if stats.published:
        table.add_row("MQTT published", f"{stats.published:,}")
        table.add_row("MQTT acknowledged", f"{stats.acknowledged:,}")
        if stats.refused:
            table.add_row("MQTT refused by the broker", f"{stats.refused:,}")
    if stats.written:
        table.add_row("JSONL lines written", f"{stats.written:,}")
    table.add_row("simulated", f"{stats.simulated_s:,.0f} s")
    table.add_row("wall clock", f"{stats.wall_s:,.1f} s")
    table.add_row("events/s", f"{stats.events_per_s:,.0f}")
    console.print(table)

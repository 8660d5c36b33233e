"""What the demo shows: a live view on a terminal, plain lines otherwise, and the summary."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Final

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tillpulse.demo.local_stack import DemoResult, Snapshot, View
from tillpulse.demo.watch import STORED_AS
from wire.messages import Alert, AlertStatus
from wire.timestamps import NS_PER_S, iso

PLAIN_EVERY_S: Final = 10.0


def _time(ts_ns: int) -> str:
    return iso(ts_ns)[11:19]


def _subject(alert: Alert) -> str:
    return alert.device or alert.site or alert.acquirer or "fleet"


def _opt(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _alert_line(alert: Alert) -> str:
    when, subject = _time(alert.ts), _subject(alert)
    return f"demo: alert {alert.status} {when} {alert.type} {subject}: {alert.summary}"


class LiveView(View):
    """A `rich.live.Live` panel with the pipeline's figures and the latest alerts; the
    steps and every alert are also printed above it, so they stay in the scrollback."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(
            Text("tillpulse demo: starting ..."), console=console, refresh_per_second=4
        )

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def phase(self, text: str) -> None:
        self.console.print(f"demo: {text}", highlight=False)
        self._live.update(Text(f"{text} ..."))

    def update(self, snapshot: Snapshot) -> None:
        self._live.update(render_snapshot(snapshot))

    def alert(self, alert: Alert) -> None:
        style = "red" if alert.status is AlertStatus.FIRING else "green"
        self.console.print(Text(_alert_line(alert), style=style), no_wrap=True, overflow="ellipsis")


class PlainView(View):
    """For a log or a pipe: a line per phase, per alert and every `PLAIN_EVERY_S`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._next = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def phase(self, text: str) -> None:
        self.console.print(f"demo: {text}", highlight=False, soft_wrap=True)

    def update(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now < self._next and snapshot.phase == "running":
            return
        self._next = now + PLAIN_EVERY_S
        s = snapshot
        self.console.print(
            f"demo: sim {iso(s.sim_ns)[:16]} wall {s.wall_s:.0f}s | sent {s.sent:,} "
            f"stored {_opt(s.stored, ',')} | terminals online {s.online}/{s.terminals} "
            f"offline {s.offline} | payments/s {_opt(s.payments_per_s, '.2f')} simulated "
            f"{_opt(_wall(s), '.0f')} wall "
            f"approval {_opt(_pct(s.approval), '.1f')}% p95 {_opt(s.latency_p95_ms, '.0f')} ms "
            f"| spool {_opt(s.spool, ',')} outbox {_opt(s.outbox, ',')} | alerts {s.alert_count}",
            highlight=False,
            soft_wrap=True,
        )

    def alert(self, alert: Alert) -> None:
        self.console.print(_alert_line(alert), highlight=False, soft_wrap=True)


def _wall(s: Snapshot) -> float | None:
    return None if s.payments_per_s is None else s.payments_per_s * s.accel


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def render_snapshot(s: Snapshot) -> Group:
    figures = Table.grid(padding=(0, 3))
    for _ in range(4):
        figures.add_column()
    figures.add_row(
        f"[bold]simulated[/] {iso(s.sim_ns)[:16].replace('T', ' ')} UTC",
        f"[bold]day[/] {s.progress:.0%} done",
        f"[bold]wall[/] {s.wall_s:.0f} s",
        f"[bold]phase[/] {s.phase}",
    )
    figures.add_row(
        f"[bold]terminals online[/] {s.online} / {s.terminals}",
        f"[bold]offline[/] {'[red]' if s.offline else ''}{s.offline}",
        f"[bold]events sent[/] {s.sent:,}",
        f"[bold]stored[/] {_opt(s.stored, ',')}",
    )
    figures.add_row(
        f"[bold]payments/s[/] {_opt(s.payments_per_s, '.2f')} simulated, "
        f"{_opt(_wall(s), '.0f')} wall",
        f"[bold]approval[/] {_opt(_pct(s.approval), '.1f')} %",
        f"[bold]latency p95[/] {_opt(s.latency_p95_ms, '.0f')} ms",
        f"[bold]gateway spool[/] {_opt(s.spool, ',')}  [bold]edge outbox[/] {_opt(s.outbox, ',')}",
    )
    alerts = Table(title=f"alerts ({s.alert_count})", expand=True, title_justify="left")
    for name in ("simulated", "status", "type", "subject", "summary"):
        alerts.add_column(name, no_wrap=True, overflow="ellipsis")  # one line per alert
    for alert in s.alerts:
        style = "red" if alert.status is AlertStatus.FIRING else "green"
        alerts.add_row(
            _time(alert.ts),
            Text(str(alert.status), style=style),
            alert.type,
            _subject(alert),
            alert.summary,
        )
    return Group(figures, alerts)


def render_summary(result: DemoResult, console: Console) -> None:
    """Events sent vs stored, anomalies injected vs detected, and the verdict."""
    counts = Table(title="events: sent by the fleet vs stored in InfluxDB", title_justify="left")
    for name in ("event", "measurement", "sent", "stored", ""):
        counts.add_column(name, justify="left" if name in {"event", "measurement"} else "right")
    for name, sent in result.sent.items():
        stored = result.stored.get(name, 0)
        verdict = "ok" if stored == sent else "MISMATCH"
        counts.add_row(name, STORED_AS[name], f"{sent:,}", f"{stored:,}", verdict)
    total_sent, total_stored = sum(result.sent.values()), sum(result.stored.values())
    verdict = "ok" if result.counts_match else "MISMATCH"
    counts.add_row("all", "", f"{total_sent:,}", f"{total_stored:,}", verdict, style="bold")
    console.print(counts)
    if result.samples_dropped:
        console.print(f"serial lines dropped {result.samples_dropped} samples (backed up)")
    console.print(_detections(result))
    o = result.report.overall
    side_effects = o.unexplained_by_type - o.false_alerts
    console.print(
        f"alerts: {o.firing_alerts} fired; {o.false_alerts} false (during no injection); "
        f"{side_effects} of another type during an injection (e.g. the approval drop that "
        f"card testing causes); detection window {result.report.window_s:g} s simulated"
    )
    s = result.settings
    console.print(
        f"{s.terminals} terminals ({s.serial} through edge agents on ptys) and {s.sensors} "
        f"sensors, {s.sim_ns / NS_PER_S / 3600:g} simulated hours in {result.wall_s:.0f} s "
        f"(x{s.accel:.0f}); the model was trained on the quiet day before "
        f"({result.history_events:,} events through the same pipeline); "
        f"state, alerts.jsonl and logs in {s.state_dir}/"
    )
    if result.ok:
        console.print("[bold green]demo ok[/]: every event stored, every anomaly detected")
    else:
        why = []
        if not result.counts_match:
            why.append("events sent and stored differ")
        if not result.all_detected:
            why.append(f"{len(result.report.missed)} injected anomalies not detected")
        console.print(f"[bold red]demo failed[/]: {'; '.join(why)}")


def _detections(result: DemoResult) -> Table:
    table = Table(title="anomalies: injected vs detected", title_justify="left")
    for name in ("injected", "simulated", "targets", "detected", "delay", "alerts"):
        table.add_column(name, justify="right" if name in {"delay", "alerts"} else "left")
    rows = {row.type: row for row in result.report.rows}
    missed = {label.label_id for label in result.report.missed}
    for label in result.labels:
        row = rows.get(label.type.value)
        targets = label.acquirers or label.devices or label.sites
        detected = label.label_id not in missed
        delay = "-"
        if detected and row is not None and row.delay is not None:
            median = "median " if row.labels > 1 else ""
            delay = f"{median}{row.delay.median_s / 60:.0f} min ({row.delay.median_windows:.1f} w)"
        table.add_row(
            label.type.value,
            f"{_time(label.start_ns)}-{_time(label.end_ns)}",
            ", ".join(targets[:3]) + (f" +{len(targets) - 3}" if len(targets) > 3 else ""),
            "[green]yes[/]" if detected else "[red]no[/]",
            delay,
            str(row.true_alerts) if row is not None else "0",
        )
    return table

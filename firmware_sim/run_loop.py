"""Running a simulation into a sink: time acceleration, progress and the counters.

``accel`` is simulated seconds per wall-clock second (60: a day in 24 minutes);
0 means as fast as possible: no waiting, the rate is set by the sink alone.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from firmware_sim.report import RunStats
from firmware_sim.run_setup import Simulation
from firmware_sim.sinks import Sink
from runtime.logs import kv
from wire.timestamps import NS_PER_S, iso

log = logging.getLogger(__name__)
PROGRESS_EVERY: Final = 2_000  # events between progress updates


def run(
    simulation: Simulation,
    sink: Sink,
    *,
    accel: float = 0.0,
    console: Console | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Feed every event of ``simulation`` to ``sink``; returns what happened."""
    stats = stats if stats is not None else RunStats()
    stats.add_labels(simulation.labels)
    settings = simulation.settings
    start_ns = settings.start_ns
    log.info(
        "sim_started",
        extra=kv(
            terminals=settings.terminals,
            sensors=settings.sensors,
            seed=settings.seed,
            start=iso(start_ns),
            duration_s=settings.duration_ns // NS_PER_S,
            accel=accel,
            scenario=settings.scenario.name,
            injections=len(simulation.labels),
        ),
    )
    wall_start = time.monotonic()
    progress = Progress(
        TextColumn("[bold]sim[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[events]:,} events"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=console is None,
        transient=False,
    )
    with progress:
        task = progress.add_task(iso(start_ns), total=settings.duration_ns / NS_PER_S, events=0)
        try:
            for number, event in enumerate(simulation.engine.events(), start=1):
                if accel > 0.0:
                    deadline = wall_start + (event.at_ns - start_ns) / NS_PER_S / accel
                    if deadline > time.monotonic():
                        sink.idle_until(deadline)
                sink.handle(event)
                stats.count(event)
                if number % PROGRESS_EVERY == 0:
                    progress.update(
                        task,
                        completed=(event.at_ns - start_ns) / NS_PER_S,
                        description=iso(event.at_ns),
                        events=stats.total_events,
                    )
        finally:
            sink.close()
        progress.update(task, completed=settings.duration_ns / NS_PER_S, events=stats.total_events)
    stats.wall_s = time.monotonic() - wall_start
    stats.simulated_s = settings.duration_ns / NS_PER_S
    log.info(
        "sim_finished",
        extra=kv(
            events=stats.total_events,
            wall_s=round(stats.wall_s, 3),
            events_per_s=round(stats.events_per_s),
            published=stats.published,
            acknowledged=stats.acknowledged,
            duplicates=stats.duplicates,
            corrupted=stats.corrupted,
        ),
    )
    return stats

"""Running a simulation into a sink: time acceleration, progress and the counters.

``accel`` is simulated seconds per wall-clock second (60: a day in 24 minutes);
0 means as fast as possible: no waiting, the rate is set by the sink alone.

Progress: a `rich` bar on a terminal (``console``); in a pipe or a journal, where a
bar shows nothing until the end, a ``sim_progress`` log line every ``log_every_s``
seconds (a log record, so ``--log-json`` keeps stderr JSON).
"""

from __future__ import annotations

import logging
import time
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from firmware_sim.errors import SimError
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
    log_every_s: float | None = None,
) -> RunStats:
    """Feed every event of ``simulation`` to ``sink``; returns what happened. Ctrl-C
    closes the sink (what is in flight is delivered) and logs ``sim_stopped``."""
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
    next_log = wall_start + log_every_s if log_every_s is not None else float("inf")
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
                if log_every_s is not None and time.monotonic() >= next_log:
                    next_log = time.monotonic() + log_every_s
                    done = (event.at_ns - start_ns) / settings.duration_ns
                    _log_progress(stats, event.at_ns, done, wall_start)
        except KeyboardInterrupt:
            stats.wall_s = time.monotonic() - wall_start
            log.warning("sim_stopped", extra=kv(reason="interrupted", **_counts(stats)))
            try:
                sink.close()
            except SimError as exc:  # stopped mid-run: not drained is expected, not the failure
                log.warning("sink_not_drained", extra=kv(error=str(exc)))
            raise
        except BaseException:
            sink.close()
            raise
        sink.close()
        progress.update(task, completed=settings.duration_ns / NS_PER_S, events=stats.total_events)
    stats.wall_s = time.monotonic() - wall_start
    stats.simulated_s = settings.duration_ns / NS_PER_S
    log.info("sim_finished", extra=kv(**_counts(stats)))
    return stats


def _counts(stats: RunStats) -> dict[str, float]:
    return {
        "events": stats.total_events,
        "wall_s": round(stats.wall_s, 3),
        "events_per_s": round(stats.events_per_s),
        "published": stats.published,
        "acknowledged": stats.acknowledged,
        "duplicates": stats.duplicates,
        "corrupted": stats.corrupted,
    }


def _log_progress(stats: RunStats, reached_ns: int, done: float, wall_start: float) -> None:
    wall_s = time.monotonic() - wall_start
    log.info(
        "sim_progress",
        extra=kv(
            reached=iso(reached_ns),
            done_pct=round(100 * done, 1),
            events=stats.total_events,
            events_per_s=round(stats.total_events / wall_s) if wall_s > 0 else 0,
        ),
    )

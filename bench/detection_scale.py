"""How the detection cycle grows with the fleet (issue #18): the newest window of 1,000,
10,000 and 50,000 terminals against a real influxd 1.6, on one core.

A small fleet is simulated for two days and trained on (so every terminal of the
measured fleets is a cold start on its merchant category's profile, as in
`bench.detector_quality`'s scale part). Then each fleet is simulated for the
45 minutes before its busy hour's newest window, each into a database of its own.
Each round measures two ways of reading side by side, on the same data: ``full``
reads every device's 15-minute heartbeat lookback and newest connection points in
every window (how every window read before issue #18: what the first cycle of a job
still does), ``carried`` reads what changed since the memory (cloud.reading.window).
Each starts a detection job with no carried state, runs the window before the newest
(the first cycle after a start, which reads the lookback) and then times the newest
window: wall time, reading and detecting, the process CPU time of the cycle, influxd's
CPU time over it (from /proc), the queries with the rows each returned, and whether
both ways found the same. The cycles run pinned to one core; influxd runs in its own
process. The machine may be shared: CPU times are steadier than wall times.

    .venv/bin/python -m bench.detection_scale [--fleets 1000,10000,50000] [--rounds 3]

JSON figures on stdout (medians over the rounds), progress on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from bench.common import emit, iso, median
from cloud.detectors.trained_model import TrainedModel
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.training import train
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from cloud.reading.window import WindowData, fetch_window
from firmware_sim.run_setup import SimSettings
from testkit.fleet_loader import fleet_lines, load_fleet
from testkit.servers import InfluxDB1Server
from wire.timestamps import NS_PER_S

WINDOW_S: Final = 300
DAY_NS: Final = 86_400 * NS_PER_S
TRAIN_START_NS: Final = 1_791_158_400 * NS_PER_S  # Monday 2026-10-05 00:00 UTC
TRAIN_TERMINALS: Final = 100
TRAIN_DAYS: Final = 2
NEWEST_END_NS: Final = TRAIN_START_NS + 30 * DAY_NS + 12 * 3600 * NS_PER_S  # a weekday, 12:00
LOADED_S: Final = 45 * 60  # the 15-minute heartbeat lookback, the windows, a margin
LOAD_BATCH: Final = 5_000  # lines a write


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def trained_model(server: InfluxDB1Server) -> TrainedModel:
    server.create_database("scale_train")
    load_fleet(
        server,
        "scale_train",
        terminals=TRAIN_TERMINALS,
        start=iso(TRAIN_START_NS),
        hours=TRAIN_DAYS * 24,
        seed=4243,
    )
    with InfluxQLReader(ReaderSettings(url=server.url, database="scale_train")) as reader:
        return train(
            reader, TRAIN_START_NS, TRAIN_START_NS + TRAIN_DAYS * DAY_NS, window_s=WINDOW_S
        )


def influxd_cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query_shape(q: str) -> str:
    """A query with its timestamps and site lists elided, to name it in the figures."""
    return re.sub(r"\d{15,}", "T", re.sub(r"/\^\(\?:[^/]*\)\$/", "/SITES/", q))[:160]


class FullReads(Detection):
    """Every window read as the first cycle of a job reads it (before issue #18)."""

    def fetch(self, end_ns: int) -> WindowData:
        return fetch_window(self.reader, end_ns - self.window_ns, end_ns, shard=self.shard)


MODES: Final = {"full": FullReads, "carried": Detection}


def one_round(
    reader: InfluxQLReader, detection: Detection, end_ns: int, pid: int
) -> dict[str, Any]:
    window_ns = detection.window_ns
    began = time.perf_counter()
    detection.run(end_ns - window_ns)  # the first cycle after a start: no carried state
    first_s = time.perf_counter() - began
    queries: list[tuple[str, int]] = []
    reader.on_query = lambda q, rows: queries.append((query_shape(q), rows))
    cpu, influx_cpu, began = time.process_time(), influxd_cpu_s(pid), time.perf_counter()
    report = detection.run(end_ns)
    wall_s = time.perf_counter() - began
    cpu_s, influx_s = time.process_time() - cpu, influxd_cpu_s(pid) - influx_cpu
    reader.on_query = None
    found = sorted(str(f.key) for f in report.findings)
    return {
        "cycle_s": wall_s,
        "read_s": report.read_s,
        "detect_s": report.detect_s,
        "cycle_cpu_s": cpu_s,
        "influxd_cpu_s": influx_s,
        "first_cycle_s": first_s,
        "queries": queries,
        "findings": found,
    }


def load(server: InfluxDB1Server, database: str, terminals: int) -> tuple[int, int]:
    """Simulate the fleet into ``database``: (its newest window's end, points written).

    Written in small batches, each retried once if a busy influxd does not answer in
    time (a point written twice lands on itself)."""
    server.create_database(database)
    start_ns = NEWEST_END_NS - LOADED_S * NS_PER_S
    settings = SimSettings(
        terminals=terminals,
        sensors=0,
        seed=4242,
        start_ns=start_ns,
        duration_ns=LOADED_S * NS_PER_S,
    )
    lines, _, _ = fleet_lines(settings)
    written = 0
    while batch := list(itertools.islice(lines, LOAD_BATCH)):
        try:
            server.write(batch, database)
        except TimeoutError:
            server.write(batch, database)
        written += len(batch)
    return start_ns + LOADED_S * NS_PER_S, written


def fleet_figures(
    server: InfluxDB1Server, model: TrainedModel, terminals: int, rounds: int
) -> dict[str, Any]:
    database = f"scale_{terminals}"
    started = time.perf_counter()
    end_ns, points = load(server, database, terminals)
    progress(f"{terminals} terminals: {points} points in {time.perf_counter() - started:.0f} s")
    assert server.pid is not None
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        with InfluxQLReader(ReaderSettings(url=server.url, database=database)) as reader:
            for index in range(rounds):
                for mode, job in MODES.items():
                    detection = job(reader, model, DetectionSettings(window_s=WINDOW_S))
                    runs[mode].append(one_round(reader, detection, end_ns, server.pid))
                    progress(f"  round {index + 1} {mode}: {runs[mode][-1]['cycle_s']:.2f} s")
    finally:
        os.sched_setaffinity(0, cores)
    out: dict[str, Any] = {"terminals": terminals, "points": points}
    for mode, mode_runs in runs.items():
        out[mode] = mode_figures(mode_runs)
    out["same_findings"] = all(
        full["findings"] == carried["findings"]
        for full, carried in zip(runs["full"], runs["carried"], strict=True)
    )
    return out


def mode_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(median([run[key] for run in runs]), 3)

    queries = runs[0]["queries"]
    return {
        "cycle_s": med("cycle_s"),
        "read_s": med("read_s"),
        "detect_s": med("detect_s"),
        "cycle_cpu_s": med("cycle_cpu_s"),
        "influxd_cpu_s": med("influxd_cpu_s"),
        "first_cycle_s": med("first_cycle_s"),
        "cycle_runs_s": [round(run["cycle_s"], 2) for run in runs],
        "queries": len(queries),
        "rows_read": sum(rows for _, rows in queries),
        "rows_per_query": [{"query": q, "rows": rows} for q, rows in queries],
        "findings": len(runs[0]["findings"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fleets", default="1000,10000,50000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fleets = [int(n) for n in args.fleets.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-detection-scale-") as workdir:
        server = InfluxDB1Server(Path(workdir))
        server.start()
        try:
            started = time.perf_counter()
            model = trained_model(server)
            progress(f"model trained in {time.perf_counter() - started:.0f} s")
            figures = [fleet_figures(server, model, n, args.rounds) for n in fleets]
        finally:
            server.stop()
    per_terminal = {
        mode: [round(f[mode]["cycle_cpu_s"] / f["terminals"] * 1e6, 1) for f in figures]
        for mode in MODES
    }
    emit(
        "detection_scale",
        {
            "window_s": WINDOW_S,
            "rounds": args.rounds,
            "one_core": True,
            "fleets": figures,
            "cycle_cpu_us_per_terminal": per_terminal,
        },
    )


if __name__ == "__main__":
    main()

"""The 1/100 capacity run: 10,000 terminals at real-time rates through the whole pipeline.

docs/capacity.md carries the arithmetic for 1,000,000 terminals; this run checks it
at 1/100 on one machine, every stage a real process:

    tillpulse sim fleet --accel 1 --mqtt ─▶ Mosquitto ─▶ gateway run ─▶ influxd 1.6
                                                                          ▲
                                         cloud detect --every (5-min windows, live)

The simulator starts at the wall clock's present (simulated time = real time), with
its default rates (a heartbeat a minute per terminal, a sample a minute per sensor,
payments by merchant profile and hour). The detection job runs cold (no model: the
model needs days of history, more than this run can load; amount outliers and card
velocity are then skipped). Its first cycle, the catch-up over a day of empty windows,
is done before the fleet starts and is reported apart.

Recorded: the events the simulator sent per stream and the points InfluxDB stored per
measurement (they must be equal), how far the newest stored payment trails the
simulated clock, CPU seconds (and per event) and peak RSS of each process from
``/proc``, each detection cycle's duration against the window length (keeping up:
every cycle of a window well within the window, one window per cycle after the
catch-up), the points in each window, and InfluxDB's disk bytes per event.

    .venv/bin/python -m bench.capacity_run [--minutes 10] [--terminals 10000]
        [--sensors 2500] [--every 10] [--lag-s 120]

One JSON line on stdout (bench.common.emit), a progress line on stderr every few
seconds; exit 1 with the reason when stored != sent or detection fell behind (the
figures are printed first). Other work on the machine shows in the wall rates more
than in the CPU seconds per event.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from bench.common import emit, median, process_rss_bytes
from bench.gateway_throughput import GatewayChild
from bench.sim_scale import BenchFailure, open_files_limit, process_cpu_s
from testkit.servers import InfluxDB1Server, MosquittoServer, wait_until
from wire.points import Measurement
from wire.timestamps import NS_PER_S, iso, parse_iso

DATABASE: Final = "tillpulse"
WINDOW_S: Final = 300  # the shipped cloud config's window
STORED_AS: Final = {  # the simulator's message type -> the measurement it is stored as
    "PaymentTransaction": Measurement.PAYMENT,
    "TerminalStatus": Measurement.TERMINAL_STATUS,
    "SensorReading": Measurement.SENSOR,
}
PROGRESS_S: Final = 5.0
FD_HEADROOM: Final = 300  # listener, logs, persistence, the gateway's and influxd's files
BROKER_MAX_INFLIGHT: Final = 1000  # = the gateway's receive_maximum
BROKER_MAX_QUEUED: Final = 1_000_000  # never the silent default of 1000 (DESIGN.md, traps)
SPOOL_SEGMENT_BYTES: Final = 64 * 2**20
SUMMARY_ROW: Final = re.compile(r"│\s*(events: \w+|MQTT \w+)\s*│\s*([\d,]+)\s*│")


class JsonLog:
    """A child's JSON log lines (stderr), read by a thread and copied to a file."""

    def __init__(self, stream: IO[bytes], copy: Path) -> None:
        self._lock = threading.Lock()
        self.records: list[tuple[int, dict[str, Any]]] = []  # (arrival ns, record)
        self._copy = copy
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with self._copy.open("ab") as copy:
            for line in stream:
                copy.write(line)
                copy.flush()
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a traceback or another plain line: kept in the copy
                with self._lock:
                    self.records.append((time.time_ns(), record))

    def events(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(at, r) for at, r in self.records if r.get("event") == name]


class Meter:
    """CPU seconds since the start and peak RSS of the processes being watched."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.cpu_start: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}
        self.rss_max: dict[str, int] = {}

    def watch(self, name: str, pid: int | None) -> None:
        if pid is None:
            raise BenchFailure(f"{name} is not running")
        self.pids[name] = pid
        self.cpu_start[name] = process_cpu_s(pid) or 0.0
        self.rss_max[name] = 0
        self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            rss = process_rss_bytes(pid)
            cpu = process_cpu_s(pid)
            if rss is not None:
                self.rss_max[name] = max(self.rss_max[name], rss)
            if cpu is not None:
                self.cpu_s[name] = cpu - self.cpu_start[name]

    def exited(self, name: str, rusage: resource.struct_rusage) -> None:
        """Final figures of a child reaped with os.wait4 (its /proc entry is gone)."""
        self.pids.pop(name)
        self.cpu_s[name] = rusage.ru_utime + rusage.ru_stime - self.cpu_start[name]
        self.rss_max[name] = max(self.rss_max[name], rusage.ru_maxrss * 1024)


def query(influx: InfluxDB1Server, q: str) -> list[list[Any]]:
    return influx.series_values(q, DATABASE)


def stored_counts(influx: InfluxDB1Server, start_ns: int, end_ns: int) -> dict[str, int]:
    """Points stored per simulator message type with a time in ``[start, end)``."""
    counts: dict[str, int] = {}
    for name, measurement in STORED_AS.items():
        rows = query(
            influx,
            f'SELECT count(seq) FROM "{measurement}" WHERE time >= {start_ns} AND time < {end_ns}',
        )
        counts[name] = int(rows[0][1]) if rows else 0
    return counts


def points_by_measurement(influx: InfluxDB1Server, start_ns: int, end_ns: int) -> dict[str, int]:
    """Every measurement's points in ``[start, end)``, the gateway's aggregates and the
    devices' states included: InfluxDB's whole write load (a point's count is that of
    its most frequent field)."""
    counts: dict[str, int] = {}
    for (name,) in query(influx, "SHOW MEASUREMENTS"):
        rows = query(
            influx, f'SELECT count(*) FROM "{name}" WHERE time >= {start_ns} AND time < {end_ns}'
        )
        counts[name] = max((int(v) for v in rows[0][1:] if v is not None), default=0) if rows else 0
    return counts


def newest_payment_ns(influx: InfluxDB1Server) -> int | None:
    rows = query(
        influx,
        f'SELECT seq FROM "{Measurement.PAYMENT}" WHERE time > now() - 20s '
        "ORDER BY time DESC LIMIT 1",
    )
    return int(rows[0][0]) if rows else None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def gateway_counters(gateway: GatewayChild) -> dict[str, int]:
    """The gateway's own counters from its /metrics: rejections (every reason), messages
    received, and spool appends and fsyncs (messages per fsync: its group commit), as of
    its latest refresh of them."""
    with urllib.request.urlopen(f"http://{gateway.http}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ("rejected", "ingest_received", "spool_appends", "spool_fsyncs")
    counts = dict.fromkeys(wanted, 0)
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(f"tillpulse_gateway_{name}_total"):
                counts[name] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def disk_bytes(path: Path) -> int:
    """Disk space the files under ``path`` take (allocated blocks, as ``du``: influxd
    preallocates its series file, 4 MiB a segment, mostly holes)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def cloud_config(path: Path, influx: InfluxDB1Server, lag_s: int) -> Path:
    path.write_text(
        f'[cloud]\nstate_dir = "{path.parent / "cloud"}"\nwindow_s = {WINDOW_S}\n'
        f"lag_s = {lag_s}\n"
        f'[query]\nurl = "{influx.url}"\ndatabase = "{DATABASE}"\n'
        f'[influxdb]\ndialect = "v1"\nurl = "{influx.url}"\ndatabase = "{DATABASE}"\n'
    )
    return path


class Cycles:
    """The detection job's cycles (``cycle_done``), and the windows each did."""

    def __init__(self, log: JsonLog, lag_s: int) -> None:
        self.log = log
        self.lag_ns = lag_s * NS_PER_S

    def all(self) -> list[dict[str, Any]]:
        """Each cycle's duration and window ends; the job logs no window times, so they are
        inferred as ``run_live`` picks them: the newest end at or before the cycle's start
        minus ``lag_s``, and the ``windows`` ends before it."""
        out = []
        window_ns = WINDOW_S * NS_PER_S
        for _, record in self.log.events("cycle_done"):
            done_ns = parse_iso(record["ts"])
            due = done_ns - round(record["duration_s"] * NS_PER_S) - self.lag_ns
            newest = due - due % window_ns
            ends = [newest - k * window_ns for k in range(record["windows"])]
            out.append({"duration_s": record["duration_s"], "ends": ends})
        return out

    def done_ends(self) -> set[int]:
        return {end for cycle in self.all() for end in cycle["ends"]}


def start_detect(
    workdir: Path, config: Path, every_s: float
) -> tuple[subprocess.Popen[bytes], JsonLog]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "cloud", "detect", "--log-json"),
            *("-c", str(config), "--every", f"{every_s:g}s"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    return process, JsonLog(process.stderr, workdir / "detect.log")


def start_sim(
    workdir: Path, broker: MosquittoServer, args: argparse.Namespace, start_ns: int
) -> tuple[subprocess.Popen[bytes], JsonLog, Path]:
    summary = workdir / "sim-summary.txt"
    with summary.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "firmware_sim", "fleet", "--log-json", "--accel", "1"),
                *("--terminals", str(args.terminals), "--sensors", str(args.sensors)),
                *("--duration", f"{args.minutes * 60:g}s", "--start", iso(start_ns)),
                *("--mqtt", f"{broker.host}:{broker.port}", "--seed", str(args.seed)),
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},  # the summary table unwrapped
        )
    assert process.stderr is not None
    return process, JsonLog(process.stderr, workdir / "sim.log"), summary


def sim_summary(path: Path) -> dict[str, int]:
    """The simulator's summary table: events by type, MQTT published and acknowledged."""
    rows = SUMMARY_ROW.findall(path.read_text(encoding="utf-8"))
    return {what.removeprefix("events: "): int(n.replace(",", "")) for what, n in rows}


def progress(text: str) -> None:
    sys.stderr.write(f"[capacity_run {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    """One run's processes and what was seen of them."""

    args: argparse.Namespace
    workdir: Path
    broker: MosquittoServer
    influx: InfluxDB1Server
    gateway: GatewayChild
    meter: Meter = field(default_factory=Meter)
    detect: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    start_ns: int = 0
    end_ns: int = 0
    lags: list[float] = field(default_factory=list)

    def start_detection(self) -> Cycles:
        config = cloud_config(self.workdir / "cloud.toml", self.influx, self.args.lag_s)
        self.detect, log = start_detect(self.workdir, config, self.args.every)
        cycles = Cycles(log, self.args.lag_s)
        progress("detection: first cycle (catch-up over empty windows)")
        wait_until(
            lambda: bool(log.events("cycle_done")) or not self.detect_alive(),
            timeout=600,
            interval=0.5,
            message="no first detection cycle",
        )
        self.check_alive()
        return cycles

    def detect_alive(self) -> bool:
        return self.detect is not None and self.detect.poll() is None

    def check_alive(self) -> None:
        self.gateway.check_alive()
        if not self.detect_alive():
            raise BenchFailure(f"cloud detect exited: {self.workdir}/detect.log")

    def run_fleet(self, cycles: Cycles) -> tuple[float, Path]:
        """Start the fleet at the present and follow it to its end; returns its wall
        seconds and its summary file."""
        args = self.args
        self.start_ns = time.time_ns() // NS_PER_S * NS_PER_S
        self.end_ns = self.start_ns + round(args.minutes * 60 * NS_PER_S)
        launched = time.monotonic()
        self.sim, sim_log, summary = start_sim(self.workdir, self.broker, args, self.start_ns)
        self.meter.watch("sim", self.sim.pid)
        progress(
            f"fleet of {args.terminals:,} terminals and {args.sensors:,} sensors from "
            f"{iso(self.start_ns)} for {args.minutes:g} min"
        )
        next_report = time.monotonic() + PROGRESS_S
        while True:
            self.check_alive()
            pid, status, rusage = os.wait4(self.sim.pid, os.WNOHANG)
            if pid:  # reaped here, not by Popen: wait4 gives its CPU and peak RSS
                self.sim.returncode = os.waitstatus_to_exitcode(status)
                self.meter.exited("sim", rusage)
                break
            self.meter.sample()
            if time.monotonic() >= next_report:
                next_report += PROGRESS_S
                self.report(sim_log, cycles, time.monotonic() - launched)
            time.sleep(1.0)
        if self.sim.returncode != 0:
            raise BenchFailure(
                f"the simulator exited {self.sim.returncode}: {self.workdir}/sim.log"
            )
        return time.monotonic() - launched, summary

    def report(self, sim_log: JsonLog, cycles: Cycles, elapsed_s: float) -> None:
        lag = simulated_lag_s(self.influx, sim_log, self.end_ns)
        if lag is not None:
            self.lags.append(lag)
        reports = sim_log.events("sim_progress")
        sent = reports[-1][1]["events"] if reports else 0
        windows = len(cycles.done_ends() & self.windows())
        progress(
            f"{elapsed_s:5.0f} s: sent {sent:,}, newest payment "
            f"{'-' if lag is None else f'{lag:.2f} s'} behind, windows detected {windows}"
        )

    def drain(self, sent: dict[str, int]) -> dict[str, int]:
        """What InfluxDB holds of the run once it holds all that was sent, or after a
        deadline (then less: the caller reports it)."""
        stored: dict[str, int] = {}

        def drained() -> bool:
            stored.update(stored_counts(self.influx, self.start_ns, self.end_ns + NS_PER_S))
            return stored == sent

        with contextlib.suppress(AssertionError):
            wait_until(drained, timeout=180, interval=1.0)
        return stored

    def windows(self) -> set[int]:
        """The ends of the detection windows that end inside the run."""
        window_ns = WINDOW_S * NS_PER_S
        first = self.start_ns - self.start_ns % window_ns + window_ns
        return set(range(first, self.end_ns + 1, window_ns))

    def await_detection(self, cycles: Cycles) -> None:
        wanted = self.windows()
        if not wanted:
            return
        due_in = (max(wanted) + self.args.lag_s * NS_PER_S) / NS_PER_S - time.time()
        progress(f"waiting for detection of the run's last window (due in {due_in:.0f} s)")
        wait_until(
            lambda: wanted <= cycles.done_ends() or not self.detect_alive(),
            timeout=max(due_in, 0) + self.args.every + 120,
            interval=1.0,
            message="detection did not reach the run's last window",
        )
        self.meter.sample()

    def window_points(self) -> list[dict[str, Any]]:
        window_ns = WINDOW_S * NS_PER_S
        return [
            {
                "window_end": iso(end),
                "points": stored_counts(self.influx, end - window_ns, end),
                "full": end - window_ns >= self.start_ns,
            }
            for end in sorted(self.windows())
        ]

    def disk(self) -> dict[str, int]:
        """InfluxDB's disk use for the run's database: write-ahead log, series file
        (the series index), TSM files (what the cache was compacted into so far)."""
        data = self.workdir / "influxdb" / "data" / DATABASE
        series = disk_bytes(data / "_series")
        return {
            "wal": disk_bytes(self.workdir / "influxdb" / "wal" / DATABASE),
            "series_file": series,
            "tsm_and_index": disk_bytes(data) - series,
        }

    def stop(self) -> None:
        for child in (self.sim, self.detect):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                child.wait(60)
        self.gateway.stop()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    clients = args.terminals + args.sensors
    figures: dict[str, Any] = {
        "terminals": args.terminals,
        "sensors": args.sensors,
        "minutes": args.minutes,
        "accel": 1,
        "window_s": WINDOW_S,
        "lag_s": args.lag_s,
        "detect_every_s": args.every,
        "model": "none (cold)",
        "broker_max_inflight_messages": BROKER_MAX_INFLIGHT,
        "broker_max_queued_messages": BROKER_MAX_QUEUED,
        "open_files": open_files_limit(clients + FD_HEADROOM),  # the broker inherits it
        "load_average_start": round(os.getloadavg()[0], 2),
    }
    with (
        MosquittoServer(
            workdir / "mosquitto",
            max_inflight_messages=BROKER_MAX_INFLIGHT,
            max_queued_messages=BROKER_MAX_QUEUED,
            extra_config=f"max_connections {clients + 100}\n",
            ready_timeout=30.0,
        ) as broker,
        InfluxDB1Server(workdir / "influxdb") as influx,
    ):
        influx.create_database(DATABASE)
        gateway = GatewayChild(
            workdir,
            "gw-capacity",
            broker,
            influx,
            DATABASE,
            shared_group=None,
            segment_bytes=SPOOL_SEGMENT_BYTES,
        )
        state = Run(args, workdir, broker, influx, gateway)
        try:
            wait_until(
                lambda: http_ok(f"http://{gateway.http}/healthz"),
                timeout=60,
                message="the gateway did not become healthy",
            )
            cycles = state.start_detection()
            catch_up = cycles.all()[0]
            figures["detect_catch_up"] = {
                "windows": len(catch_up["ends"]),
                "duration_s": catch_up["duration_s"],
            }
            assert state.detect is not None
            for name, pid in (
                ("mosquitto", broker.pid),
                ("influxd", influx.pid),
                ("gateway", gateway.process.pid),
                ("detect", state.detect.pid),
            ):
                state.meter.watch(name, pid)
            sim_wall_s, summary_path = state.run_fleet(cycles)
            summary = sim_summary(summary_path)
            sent = {name: summary.get(name, 0) for name in STORED_AS}
            progress(f"fleet done in {sim_wall_s:.0f} s; sent {sent}; draining")
            stored = state.drain(sent)
            state.meter.sample()
            cpu = dict(state.meter.cpu_s)  # to the drain: the pipeline's work on the events
            disk = state.disk()
            state.await_detection(cycles)
            cpu["detect"] = state.meter.cpu_s["detect"]  # to its last window
            counters = gateway_counters(gateway)
            written = points_by_measurement(influx, state.start_ns, state.end_ns + NS_PER_S)
            window_points = state.window_points()
        finally:
            state.stop()
    events = sum(sent.values())
    figures |= {
        "start": iso(state.start_ns),
        "sent": sent,
        "stored": stored,
        "sent_equals_stored": stored == sent,
        "gateway_counters": counters,
        "points_by_measurement": written,
        "mqtt_published": summary.get("MQTT published"),
        "mqtt_acknowledged": summary.get("MQTT acknowledged"),
        "device_states_sent": summary.get("MQTT published", 0) - events,
        "sim_wall_s": round(sim_wall_s, 1),
        "events_per_s": round(events / (args.minutes * 60), 1),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_us_per_event": {
            k: round(v / events * 1e6, 1) for k, v in cpu.items() if k != "detect"
        },
        # the broker and the gateway also carry the devices' retained online/offline states
        "cpu_us_per_mqtt_message": {
            k: round(cpu[k] / max(summary.get("MQTT published", 0), 1) * 1e6, 1)
            for k in ("mosquitto", "gateway")
        },
        "cpu_share_of_a_core": {k: round(v / sim_wall_s, 3) for k, v in cpu.items()},
        "rss_mib_max": {k: round(v / 2**20, 1) for k, v in state.meter.rss_max.items()},
        "payment_behind_s": spread(state.lags),
        "influxdb_disk_bytes": disk,
        "influxdb_bytes_per_event": round(sum(disk.values()) / max(events, 1), 1),
        "detection": detection_figures(cycles, state.windows(), window_points),
        "load_average_end": round(os.getloadavg()[0], 2),
    }
    return figures


def spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "samples": len(values),
        "p50": round(median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def detection_figures(
    cycles: Cycles, wanted: set[int], window_points: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each cycle after the catch-up that did a window, and whether detection kept up:
    every window of the run done, one per cycle, each in under half a window."""
    run_cycles = [c for c in cycles.all()[1:] if c["ends"]]
    cycle_s = [c["duration_s"] for c in run_cycles if set(c["ends"]) & wanted]
    detected = len(wanted & cycles.done_ends())
    one_each = all(len(c["ends"]) == 1 for c in run_cycles)
    return {
        "cycles": [
            {"windows": [iso(e) for e in c["ends"]], "duration_s": c["duration_s"]}
            for c in run_cycles
        ],
        "windows": window_points,
        "cycle_s_max": max(cycle_s) if cycle_s else None,
        "cycle_to_window_max": round(max(cycle_s) / WINDOW_S, 4) if cycle_s else None,
        "windows_detected": detected,
        "windows_in_run": len(wanted),
        "one_window_per_cycle": one_each,
        "keeping_up": detected == len(wanted)
        and one_each
        and all(s < WINDOW_S / 2 for s in cycle_s),
    }


def simulated_lag_s(influx: InfluxDB1Server, sim_log: JsonLog, end_ns: int) -> float | None:
    """How far the newest stored payment trails the simulator's clock (accel 1: its
    newest progress report's simulated time plus the wall time since); None before the
    first report, and once that clock is past the run's end (no payment comes then)."""
    reports = sim_log.events("sim_progress")
    newest = newest_payment_ns(influx)
    if not reports or newest is None:
        return None
    at_ns, record = reports[-1]
    sim_now_ns = parse_iso(record["reached"]) + (time.time_ns() - at_ns)
    if sim_now_ns >= end_ns:
        return None
    return (sim_now_ns - newest) / NS_PER_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated = wall minutes")
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--sensors", type=int, default=2_500, help="the simulator's default: 1/4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=10.0, help="cloud detect --every, seconds")
    parser.add_argument("--lag-s", type=int, default=120, help="the cloud config's lag_s")
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep (logs)")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="capacity_run-") as tmp:
            figures = run(args, Path(tmp))
    emit("capacity_run", figures)
    if not figures["sent_equals_stored"]:
        raise BenchFailure(f"sent {figures['sent']} but stored {figures['stored']}")
    if not figures["detection"]["keeping_up"]:
        raise BenchFailure(f"detection fell behind: {figures['detection']}")


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as exc:
        progress(f"failed: {exc}")
        raise SystemExit(1) from None

"""``tillpulse sim``: run a simulated fleet into MQTT, a JSONL file or serial links.

    tillpulse sim fleet --terminals 200 --sensors 50 --scenario demo --accel 60 \\
        --duration 1d --mqtt 127.0.0.1:1883 --seed 7 --labels labels.jsonl
    tillpulse sim fleet --terminals 50 --duration 1d --accel 0 --out events.jsonl
    tillpulse sim serial --terminals 2 --sensors 1 --ports ports.json --accel 60
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from firmware_sim.errors import OutputError, SimError
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats, render_summary
from firmware_sim.run_loop import run
from firmware_sim.run_setup import SimSettings, Simulation, build_simulation
from firmware_sim.scenario_file import load_scenario, shipped_scenarios
from firmware_sim.serial_link import SerialFleet
from firmware_sim.simtime import default_start
from firmware_sim.sinks import JsonlSink, Sink
from runtime.durations import parse_duration
from runtime.logs import configure_logging, kv
from wire.labels import write_labels
from wire.timestamps import iso, parse_iso

log = logging.getLogger("firmware_sim")
EXIT_ERROR = 1
EXIT_USAGE = 2
CALENDAR_FILE = "calendar.toml"  # beside the labels, unless --calendar says where


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json_lines=args.log_json)
    try:
        simulation = build_simulation(_settings(args))
        if args.labels is not None:
            with _writing("--labels", args.labels):
                count = write_labels(args.labels, simulation.labels)
            log.info("labels_written", extra=kv(path=str(args.labels), labels=count))
        _write_calendar(args, simulation)
    except (SimError, ValueError) as exc:
        parser.exit(EXIT_USAGE, f"tillpulse sim: error: {exc}\n")
    console = None if args.quiet else Console(stderr=True)
    stats = RunStats()
    try:
        sink = _sink(args, simulation, stats)
        run(simulation, sink, accel=args.accel, console=console, stats=stats)
    except OutputError as exc:
        parser.exit(EXIT_USAGE, f"tillpulse sim: error: {exc}\n")
    except SimError as exc:
        log.error("sim_failed", extra=kv(error=str(exc)))
        return EXIT_ERROR
    if console is not None:
        render_summary(stats, Console())
    if stats.refused:  # an ACL or a quota: those events never reached anyone
        log.error("publishes_refused", extra=kv(refused=stats.refused))
        return EXIT_ERROR
    return 0


def _write_calendar(args: argparse.Namespace, simulation: Simulation) -> None:
    """The operator calendar of the scenario's sales and closing days: at ``--calendar``,
    else as calendar.toml beside the labels; nothing when the scenario has no such day."""
    days = simulation.calendar.day
    path = args.calendar
    if path is None and args.labels is not None and days:
        path = Path(args.labels).parent / CALENDAR_FILE
    if path is None:
        return
    with _writing("--calendar", path):
        Path(path).write_text(simulation.calendar.to_toml(), encoding="utf-8")
    log.info("calendar_written", extra=kv(path=str(path), days=len(days)))


def _settings(args: argparse.Namespace) -> SimSettings:
    return SimSettings(
        terminals=args.terminals,
        sensors=args.terminals // 4 if args.sensors is None else args.sensors,
        seed=args.seed,
        start_ns=default_start() if args.start is None else parse_iso(args.start),
        duration_ns=parse_duration(args.duration),
        scenario=load_scenario(args.scenario),
        status_every_s=args.status_every,
        sensor_every_s=args.sensor_every,
    )


def _sink(args: argparse.Namespace, simulation: Simulation, stats: RunStats) -> Sink:
    if args.command == "serial":
        devices = [d.device_id for d in simulation.fleet.devices]
        fleet = SerialFleet(devices, retransmit_s=args.retransmit, seed=args.seed)
        ports = fleet.ports()
        for device, port in ports.items():
            log.info("serial_port", extra=kv(device=device, port=port))
        if args.ports is not None:
            with _writing("--ports", args.ports):
                Path(args.ports).write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
        return fleet
    if args.out is not None:
        with _writing("--out", args.out):
            return JsonlSink(args.out, stats)
    host, _, port = args.mqtt.rpartition(":")
    return MqttFleet(host, int(port), stats, window=args.window, seed=args.seed)


@contextmanager
def _writing(option: str, path: str | Path) -> Iterator[None]:
    """Turn a failed write of an output file into one line naming the option and the fix."""
    try:
        yield
    except OSError as exc:
        raise OutputError(
            f"{option} {path}: cannot write it ({exc.strerror or exc}); "
            "name a file (not a directory) in a directory you can write"
        ) from None


def _number(text: str, cast: type[int] | type[float], minimum: float, strict: bool) -> float:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > minimum if strict else value >= minimum):  # NaN fails both
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise argparse.ArgumentTypeError(f"{text} is not {bound}")
    return value


def _whole(text: str) -> int:
    return int(_number(text, int, 0, strict=False))


def _positive_int(text: str) -> int:
    return int(_number(text, int, 0, strict=True))


def _rate(text: str) -> float:
    return _number(text, float, 0.0, strict=False)


def _interval(text: str) -> float:
    return _number(text, float, 0.0, strict=True)


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return f"{host or '127.0.0.1'}:{port}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tillpulse sim",
        description="Simulated POS terminal and sensor fleets with injected faults and fraud.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fleet = commands.add_parser("fleet", help="publish a fleet over MQTT or write it to JSONL")
    _common(fleet)
    target = fleet.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--mqtt",
        type=_host_port,
        metavar="HOST:PORT",
        help="publish each device through its own MQTT client",
    )
    target.add_argument(
        "--out", type=Path, metavar="FILE", help="write the events to a JSONL file instead"
    )
    fleet.add_argument(
        "--window",
        type=_positive_int,
        default=20,
        help="unacknowledged QoS 1 publishes per device (default 20)",
    )
    serial = commands.add_parser("serial", help="speak wire framing over one pty per device")
    _common(serial)
    serial.add_argument(
        "--ports",
        type=Path,
        metavar="FILE",
        help="write {device: pty path} as JSON for the edge agent",
    )
    serial.add_argument(
        "--retransmit",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="re-send an unacknowledged payment after this long (default 2)",
    )
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--terminals", type=_positive_int, default=20, help="POS terminals (default 20)"
    )
    parser.add_argument(
        "--sensors",
        type=_whole,
        default=None,
        help="environmental sensors (default: a quarter of the terminals)",
    )
    parser.add_argument(
        "--scenario",
        default="quiet",
        metavar="FILE",
        help=f"scenario TOML file or shipped name ({', '.join(shipped_scenarios())})",
    )
    parser.add_argument(
        "--accel",
        type=_rate,
        default=60.0,
        help="simulated seconds per wall second; 0 = as fast as possible",
    )
    parser.add_argument("--duration", default="1d", help="simulated duration (e.g. 6h, 1d)")
    parser.add_argument(
        "--start",
        default=None,
        metavar="ISO",
        help=f"simulated start, UTC (default: start of yesterday, {iso(default_start())})",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--labels", type=Path, metavar="FILE", help="write the ground-truth labels (JSONL) here"
    )
    parser.add_argument(
        "--calendar",
        type=Path,
        metavar="FILE",
        help=f"write the operator calendar (TOML) here (default: {CALENDAR_FILE} beside"
        " --labels when the scenario has sale or closing days)",
    )
    parser.add_argument(
        "--status-every",
        type=_interval,
        default=60.0,
        metavar="SECONDS",
        help="terminal heartbeat interval (default 60)",
    )
    parser.add_argument(
        "--sensor-every",
        type=_interval,
        default=60.0,
        metavar="SECONDS",
        help="sensor sample interval (default 60)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display or summary")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")

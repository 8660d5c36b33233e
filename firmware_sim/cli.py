"""`tillpulse sim`: run a simulated fleet into MQTT, a JSONL file or serial links.

    tillpulse sim fleet --terminals 200 --sensors 50 --scenario demo --accel 60 \\
        --duration 1d --mqtt 127.0.0.1:1883 --seed 7 --labels labels.jsonl
    tillpulse sim fleet --terminals 50 --duration 1d --accel 0 --out events.jsonl
    tillpulse sim serial --terminals 2 --sensors 1 --ports ports.json --accel 60

A scenario's incidents count from --start: a run that ends before one of them
starts refuses to run (--allow-partial runs it anyway). Exit codes: 0 done,
1 runtime failure (broker unreachable or refusing, not drained), 2 bad option,
scenario or output file, 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from firmware_sim.errors import OutputError
from firmware_sim.scenario_file import check_timing, load_scenario, shipped_scenarios
from firmware_sim.simtime import default_start
from runtime.cli import (
    OperatorError,
    RuntimeFailure,
    add_command,
    add_commands,
    component_parser,
    log_level,
    run_command,
)
from runtime.config import read_secret
from runtime.lifecycle import sigterm_interrupts
from runtime.logs import configure_logging, kv
from runtime.option_types import (
    at_most,
    duration_ns,
    iso_time,
    non_negative,
    positive,
    positive_int,
    whole,
)
from wire.timestamps import iso

# The fleet model, paho and rich load only when a command runs, in the functions
# that use them (PLC0415 below): `tillpulse sim --help` must stay fast.
if TYPE_CHECKING:
    from firmware_sim.report import RunStats
    from firmware_sim.run_setup import SimSettings, Simulation
    from firmware_sim.sinks import Sink

log = logging.getLogger("firmware_sim")
PROG: Final = "tillpulse sim"
CALENDAR_FILE: Final = "calendar.toml"  # beside the labels, unless --calendar says where
PASSWORD_ENV: Final = "TILLPULSE_SIM_MQTT_PASSWORD"  # or --mqtt-password-file
PROGRESS_LOG_S: Final = 5.0  # a progress line this often when stderr is no terminal
# a hundred times the fleet docs/capacity.md checks on one machine; more is a typo
MAX_DEVICES: Final = 1_000_000
_TOO_MANY: Final = "one simulator runs at most that many devices of a kind"


def main(argv: list[str]) -> int:
    with sigterm_interrupts():  # a run is a job: SIGTERM stops it as Ctrl-C does (130)
        args = _parser().parse_args(argv)
        configure_logging(log_level(args), json_lines=args.log_json)
        return run_command(PROG, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415

    from firmware_sim.report import RunStats, render_summary  # noqa: PLC0415
    from firmware_sim.run_loop import run  # noqa: PLC0415
    from firmware_sim.run_setup import build_simulation  # noqa: PLC0415
    from wire.labels import write_labels  # noqa: PLC0415

    settings = _settings(args)
    if not args.allow_partial:
        check_timing(settings.scenario, settings.start_ns, settings.duration_ns)
    password = _password(args)
    simulation = build_simulation(settings)
    if args.labels is not None:
        with _writing("--labels", args.labels):
            count = write_labels(args.labels, simulation.labels)
        log.info("labels_written", extra=kv(path=str(args.labels), labels=count))
    _write_calendar(args, simulation)
    stats = RunStats()
    sink = _sink(args, simulation, stats, password)
    # a bar on a terminal; in a pipe or a journal, progress log lines (run_loop)
    on_terminal = not args.quiet and sys.stderr.isatty()
    run(
        simulation,
        sink,
        accel=args.accel,
        console=Console(stderr=True) if on_terminal else None,
        stats=stats,
        log_every_s=None if args.quiet or on_terminal else PROGRESS_LOG_S,
    )
    if not args.quiet:
        render_summary(stats, Console())
    if stats.refused:  # an ACL or a quota: those events never reached anyone
        raise RuntimeFailure(
            f"the broker at {args.mqtt} refused {stats.refused} publishes (PUBACK with a"
            " failure reason): check the broker's ACL and quotas for the devices' topics"
        )
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
    from firmware_sim.run_setup import SimSettings  # noqa: PLC0415

    return SimSettings(
        terminals=args.terminals,
        sensors=args.terminals // 4 if args.sensors is None else args.sensors,
        seed=args.seed,
        start_ns=default_start() if args.start is None else args.start,
        duration_ns=args.duration,
        scenario=load_scenario(args.scenario),
        status_every_s=args.status_every,
        sensor_every_s=args.sensor_every,
    )


def _password(args: argparse.Namespace) -> str | None:
    """The devices' broker password (each logs in as its device id); None: anonymous."""
    if args.command != "fleet" or args.mqtt is None:
        return None
    if args.mqtt_password_file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        return read_secret(args.mqtt_password_file, PASSWORD_ENV)
    except OperatorError as exc:
        raise OperatorError(
            f"--mqtt-password-file: {exc}: name a readable file with the password on its"
            f" first line, or set {PASSWORD_ENV}"
        ) from None


def _sink(
    args: argparse.Namespace, simulation: Simulation, stats: RunStats, password: str | None
) -> Sink:
    if args.command == "serial":
        from firmware_sim.serial_link import SerialFleet  # noqa: PLC0415

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
        from firmware_sim.sinks import JsonlSink  # noqa: PLC0415

        with _writing("--out", args.out):
            return JsonlSink(args.out, stats)
    from firmware_sim.mqtt_fleet import MqttFleet  # noqa: PLC0415

    host, _, port = args.mqtt.rpartition(":")
    return MqttFleet(
        host,
        int(port),
        stats,
        window=args.publish_window,
        connect_timeout_s=args.connect_timeout,
        seed=args.seed,
        password=password,
    )


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


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return f"{host or '127.0.0.1'}:{port}"


def _parser() -> argparse.ArgumentParser:
    parser = component_parser("sim", __doc__)
    commands = add_commands(parser)
    fleet = add_command(commands, "sim", "fleet", "publish a fleet over MQTT or write it to JSONL")
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
        "--publish-window",
        type=positive_int,
        default=20,
        metavar="N",
        help="unacknowledged QoS 1 publishes per device (default 20)",
    )
    fleet.add_argument(
        "--connect-timeout",
        type=positive,
        default=30.0,
        metavar="SECONDS",
        help="keep trying an unreachable broker this long, then fail (default 30)",
    )
    fleet.add_argument(
        "--mqtt-password-file",
        metavar="FILE",
        help=f"the devices' broker password, each logging in as its device id (else"
        f" ${PASSWORD_ENV}; neither: no login)",
    )
    serial = add_command(commands, "sim", "serial", "speak wire framing over one pty per device")
    _common(serial)
    serial.add_argument(
        "--ports",
        type=Path,
        metavar="FILE",
        help="write {device: pty path} as JSON for the edge agent",
    )
    serial.add_argument(
        "--retransmit",
        type=positive,
        default=2.0,
        metavar="SECONDS",
        help="re-send an unacknowledged payment after this long (default 2)",
    )
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--terminals",
        type=at_most(MAX_DEVICES, positive_int, _TOO_MANY),
        default=20,
        help="POS terminals (default 20)",
    )
    parser.add_argument(
        "--sensors",
        type=at_most(MAX_DEVICES, whole, _TOO_MANY),
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
        "--allow-partial",
        action="store_true",
        help="run even if it ends before some of the scenario's incidents start",
    )
    parser.add_argument(
        "--accel",
        type=non_negative,
        default=60.0,
        help="simulated seconds per wall second; 0 = as fast as possible",
    )
    parser.add_argument(
        "--duration", type=duration_ns, default="1d", help="simulated duration (e.g. 6h, 1d)"
    )
    parser.add_argument(
        "--start",
        type=iso_time,
        default=None,
        metavar="ISO",
        help=f"simulated start, UTC (default: start of yesterday, {iso(default_start())});"
        " the scenario's offsets count from it",
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
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="terminal heartbeat interval (default 60)",
    )
    parser.add_argument(
        "--sensor-every",
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="sensor sample interval (default 60)",
    )

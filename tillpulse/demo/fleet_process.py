"""The demo's simulated fleet, one child process: a few terminals on ptys, the rest on MQTT.

``python -m tillpulse.demo.fleet_process --terminals 200 --sensors 50 --serial 3 ...``
builds one firmware_sim simulation (the demo day, or with ``--quiet`` a day
without incidents for training) and runs it through
`firmware_sim.run_loop.run` into a `SplitSink`: the ``--serial`` terminals speak
wire framing over their own pty (`SerialFleet`; an edge agent reads each one),
every other device is its own MQTT client (`MqttFleet`).

It talks to the demo over its standard streams, one JSON line each
(`FleetMessage`): ``ready`` with the pty paths once the ptys are open and the
labels are written; then it waits for one line on stdin (the edge agents have
opened their ports: pyserial flushes a line on open) and runs; ``progress``
every `PROGRESS_EVERY_S`; ``done`` with what it sent once everything is
acknowledged. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Final, Literal

import msgspec

from firmware_sim.errors import SimError
from firmware_sim.event_engine import LinkChange, SimEvent
from firmware_sim.fleet_layout import DeviceKind
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from firmware_sim.run_setup import SimSettings, Simulation, build_simulation
from firmware_sim.scenario_file import Scenario
from firmware_sim.serial_link import SerialFleet
from runtime.config import read_secret
from runtime.logs import configure_logging, kv
from tillpulse.demo.trading_day import DEMO_SCENARIO, LINK_INJECTIONS
from wire.labels import write_labels

log = logging.getLogger(__name__)

PROGRESS_EVERY_S: Final = 0.25
IO_SLICE_S: Final = 0.01  # the two sinks take turns at their I/O while the runner waits
EXIT_FAILED: Final = 1
FLEET_PASSWORD_ENV: Final = "TILLPULSE_DEMO_FLEET_PASSWORD"  # or --mqtt-password-file


class FleetMessage(msgspec.Struct, kw_only=True):
    """One line from the fleet process to the demo."""

    kind: Literal["ready", "progress", "done"]
    sim_ns: int = 0  # simulated time of the newest event handed over
    ports: dict[str, str] = msgspec.field(default_factory=dict)  # ready: device -> pty
    events: dict[str, int] = msgspec.field(default_factory=dict)  # by message type
    published: int = 0  # MQTT publishes / acknowledged (direct MQTT devices)
    acknowledged: int = 0
    samples_dropped: int = 0  # done: samples a backed-up serial line dropped


def serial_terminals(simulation: Simulation, count: int) -> list[str]:
    """The first ``count`` terminals that no link injection targets."""
    cut_off = {
        device
        for label in simulation.labels
        if label.type in LINK_INJECTIONS
        for device in label.devices
    }
    terminals = [
        spec.device_id
        for spec in simulation.fleet.devices
        if spec.kind is DeviceKind.TERMINAL and spec.device_id not in cut_off
    ]
    return terminals[:count]


class SplitSink:
    """Events of the serial devices to their ptys, everything else to MQTT.

    A serial device's connection changes are not sent anywhere: its edge agent
    holds the MQTT connection. Progress lines are written between events.
    """

    def __init__(self, serial: SerialFleet, mqtt: MqttFleet, stats: RunStats) -> None:
        self.serial = serial
        self.mqtt = mqtt
        self.stats = stats
        self.sim_ns = 0
        self._next_progress = 0.0

    def handle(self, event: SimEvent) -> None:
        self.sim_ns = event.at_ns
        device = event.device if isinstance(event, LinkChange) else event.message.device
        if device not in self.serial.devices:
            self.mqtt.handle(event)
        elif not isinstance(event, LinkChange):
            self.serial.handle(event)
        self._progress()

    def idle_until(self, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            turn = min(deadline, now + IO_SLICE_S)
            self.mqtt.idle_until(turn)
            if self.serial.devices:
                self.serial.idle_until(min(deadline, time.monotonic() + IO_SLICE_S))
            self._progress()

    def close(self) -> None:
        try:
            self.mqtt.close()
        finally:
            self.serial.close()

    def message(self, kind: Literal["progress", "done"]) -> FleetMessage:
        return FleetMessage(
            kind=kind,
            sim_ns=self.sim_ns,
            events=dict(self.stats.events),
            published=self.stats.published,
            acknowledged=self.stats.acknowledged,
            samples_dropped=sum(d.samples_dropped for d in self.serial.devices.values()),
        )

    def _progress(self) -> None:
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY_S
            emit(self.message("progress"))


def emit(message: FleetMessage) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(message) + b"\n")
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    settings = SimSettings(
        terminals=args.terminals,
        sensors=args.sensors,
        seed=args.seed,
        start_ns=args.start_ns,
        duration_ns=args.duration_ns,
        scenario=Scenario(name="quiet") if args.quiet else DEMO_SCENARIO,
        status_every_s=args.status_every,
        sensor_every_s=args.status_every,
    )
    simulation = build_simulation(settings)
    write_labels(args.labels, simulation.labels)
    stats = RunStats()
    serial = SerialFleet(serial_terminals(simulation, args.serial), seed=args.seed)
    host, _, port = args.mqtt.rpartition(":")
    password = read_secret(args.mqtt_password_file, FLEET_PASSWORD_ENV)
    mqtt = MqttFleet(host, int(port), stats, seed=args.seed, password=password)
    sink = SplitSink(serial, mqtt, stats)
    emit(FleetMessage(kind="ready", sim_ns=args.start_ns, ports=serial.ports()))
    if not sys.stdin.readline():  # the demo went away before saying go
        return EXIT_FAILED
    try:
        run(simulation, sink, accel=args.accel, stats=stats)
    except SimError as exc:
        log.error("sim_failed", extra=kv(error=str(exc)))
        return EXIT_FAILED
    emit(sink.message("done"))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tillpulse.demo.fleet_process", description=__doc__
    )
    parser.add_argument("--terminals", type=int, required=True)
    parser.add_argument("--sensors", type=int, required=True)
    parser.add_argument("--serial", type=int, required=True, help="terminals over ptys")
    parser.add_argument("--start-ns", type=int, required=True)
    parser.add_argument("--duration-ns", type=int, required=True)
    parser.add_argument("--accel", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--mqtt", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--mqtt-password-file",
        help=f"the devices' broker password (else ${FLEET_PASSWORD_ENV}); each device logs "
        "in as its device id",
    )
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true", help="no incidents (training history)")
    parser.add_argument("--status-every", type=float, default=60.0, help="heartbeats, samples")
    parser.add_argument("--log-level", default="info")
    return parser


if __name__ == "__main__":
    sys.exit(main())

"""``tillpulse demo``: a simulated fleet through the whole local pipeline, in one command.

Starts Mosquitto and influxd on free local ports (data in ``--state-dir``),
the gateway, a simulated trading day of ``--terminals`` terminals and
``--sensors`` sensors (``--serial`` of the terminals over ptys, each read by
its own edge agent) with a card-testing attack, an acquirer outage, a
terminal going offline and a tamper, and the cloud detection job. Shows the
pipeline live, then what was sent vs stored and what was injected vs
detected. Ctrl-C stops everything it started.

Exit codes: 0 every event stored and every anomaly detected; 1 not so, or a
part of the pipeline failed (the error names its log); 2 bad arguments or a
missing server binary (the message names the apt package); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Final

from rich.console import Console

from runtime.durations import parse_duration
from runtime.logs import KeyValueFormatter
from testkit.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    MosquittoServer,
    ServerError,
)
from tillpulse.demo.local_stack import Demo, DemoError, DemoSettings, prepare_state_dir
from tillpulse.demo.view import LiveView, PlainView, render_summary
from wire.timestamps import NS_PER_S

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
SERVERS: Final = (MosquittoServer, InfluxDB1Server)
PLAIN_WIDTH: Final = 120


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        duration_s = parse_duration(args.duration) / NS_PER_S
        if duration_s <= 0 or args.terminals < 1 or args.serial < 0 or (args.sensors or 0) < 0:
            raise ValueError(
                "--duration and --terminals must be positive, --serial and --sensors not negative"
            )
        settings = DemoSettings(
            terminals=args.terminals,
            sensors=args.terminals // 4 if args.sensors is None else args.sensors,
            serial=min(args.serial, args.terminals),
            duration_s=duration_s,
            seed=args.seed,
            state_dir=args.state_dir,
        )
        _servers_installed(install=args.install_missing)
        state = prepare_state_dir(args.state_dir)
    except (ValueError, BinaryNotFoundError, DemoError) as exc:
        parser.exit(EXIT_USAGE, f"tillpulse demo: {exc}\n")
    _log_to(state / "logs" / "demo.log", args.log_level)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for the summary's tables
        console = Console(width=max(console.width, PLAIN_WIDTH))
    view: LiveView | PlainView = (
        LiveView(console) if console.is_terminal and not args.plain else PlainView(console)
    )
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, `timeout`: stop like Ctrl-C
    # Ctrl-C even when started with SIGINT ignored (a background job of a script does
    # that, and Python then leaves it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Demo(settings, view) as demo, view:
            result = demo.run()
    except KeyboardInterrupt:
        sys.stderr.write("tillpulse demo: interrupted; every process it started is stopped\n")
        return EXIT_INTERRUPTED
    except ServerError as exc:  # a server, a child process or a step of the demo failed
        sys.stderr.write(f"tillpulse demo: {exc}\n")
        return EXIT_FAILED
    render_summary(result, console)
    return 0 if result.ok else EXIT_FAILED


def _servers_installed(*, install: bool) -> None:
    """Raise BinaryNotFoundError with the one command to run if a server is missing;
    with ``install`` and as root, install the missing Debian packages instead."""
    missing = []
    for server in SERVERS:
        try:
            server.binary_path()
        except BinaryNotFoundError:
            missing.append(server.apt_package)
    if not missing:
        return
    packages = " ".join(missing)
    if not install or os.geteuid() != 0:
        raise BinaryNotFoundError(
            f"the demo needs the Debian packages {packages}; install them with: "
            f"sudo apt-get update && sudo apt-get install -y {packages}"
        )
    sys.stderr.write(f"tillpulse demo: installing {packages} with apt-get\n")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        if subprocess.run(command, env=environment, check=False).returncode != 0:
            raise BinaryNotFoundError(f"`{' '.join(command)}` failed (its output is above)")
    for server in SERVERS:
        server.binary_path()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _log_to(path: Path, level: str) -> None:
    """The demo's own logs (cloud jobs included) go to a file: the terminal is the view's."""
    handler = logging.FileHandler(path)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tillpulse demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoSettings()
    parser.add_argument(
        "--terminals", type=int, default=defaults.terminals, help="POS terminals (default 200)"
    )
    parser.add_argument(
        "--sensors", type=int, default=None, help="sensors (default: a quarter of the terminals)"
    )
    parser.add_argument(
        "--serial",
        type=int,
        default=defaults.serial,
        help="terminals over ptys through real edge agents (default 3)",
    )
    parser.add_argument(
        "--duration",
        default="4m",
        help="wall-clock time for the simulated trading day, 08:00-18:00 (default 4m)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 7)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=defaults.state_dir,
        help="servers' data, configs and logs; emptied on every run (default .demo)",
    )
    parser.add_argument("--plain", action="store_true", help="plain lines, no live view")
    parser.add_argument(
        "--install-missing",
        action="store_true",
        help="as root, apt-get install a missing Mosquitto or InfluxDB (make demo does)",
    )
    parser.add_argument("--log-level", default="info", help="for <state-dir>/logs/demo.log")
    return parser

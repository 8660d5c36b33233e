"""`tillpulse demo`: a simulated fleet through the whole local pipeline, in one command.

Starts Mosquitto and influxd on free local ports (data in --state-dir), the gateway,
a simulated trading day of --terminals terminals and --sensors sensors (--serial of
the terminals over ptys, each read by its own edge agent) with a card-testing attack,
an acquirer outage, a terminal going offline and a tamper, and the cloud detection
job. Shows the pipeline live, then what was sent vs stored and what was injected vs
detected. Ctrl-C stops everything it started. Its own log (--log-level) goes to
<state-dir>/logs/demo.log.

Exit codes: 0 every event stored and every anomaly detected; 1 not so, or a part of
the pipeline failed (the error names its log); 2 bad arguments, a state dir it cannot
use or a missing server binary (the message names the apt package); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Final

from runtime.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    OperatorError,
    RuntimeFailure,
    component_parser,
    log_level,
    run_command,
)
from runtime.lifecycle import sigterm_interrupts
from runtime.option_types import duration_s, positive_int, whole
from tillpulse.demo import defaults

PROG: Final = "tillpulse demo"
PLAIN_WIDTH: Final = 120


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    # Ctrl-C even when started with SIGINT ignored (a background job of a script does
    # that, and Python then leaves it ignored); `kill`, `timeout`: stop like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with sigterm_interrupts():
        return run_command(PROG, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    # imported here: the servers, the stack and rich are most of --help's time otherwise
    from rich.console import Console  # noqa: PLC0415

    from testkit.install_servers import ensure_installed  # noqa: PLC0415
    from testkit.servers import BinaryNotFoundError, ServerError  # noqa: PLC0415
    from tillpulse.demo.local_stack import (  # noqa: PLC0415
        Demo,
        DemoError,
        DemoSettings,
        prepare_state_dir,
    )
    from tillpulse.demo.view import LiveView, PlainView, render_summary  # noqa: PLC0415

    settings = DemoSettings(
        terminals=args.terminals,
        sensors=args.terminals // 4 if args.sensors is None else args.sensors,
        serial=min(args.serial, args.terminals),
        duration_s=args.duration,
        seed=args.seed,
        state_dir=args.state_dir,
    )
    try:
        ensure_installed("demo", install=args.install_missing)
        state = prepare_state_dir(args.state_dir)
    except (BinaryNotFoundError, DemoError) as exc:
        raise OperatorError(str(exc)) from exc
    except OSError as exc:
        raise OperatorError(
            f"--state-dir {args.state_dir}: cannot make {exc.filename}: {exc.strerror}: "
            "choose a directory you can write with --state-dir DIR"
        ) from exc
    _log_to(state / "logs" / "demo.log", log_level(args))
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for the summary's tables
        console = Console(width=max(console.width, PLAIN_WIDTH))
    view: LiveView | PlainView = (
        LiveView(console) if console.is_terminal and not args.plain else PlainView(console)
    )
    try:
        with Demo(settings, view) as demo, view:
            result = demo.run()
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; every process it started is stopped\n")
        return EXIT_INTERRUPTED
    except ServerError as exc:  # a server, a child process or a step of the demo failed
        raise RuntimeFailure(str(exc)) from exc
    render_summary(result, console)
    return 0 if result.ok else EXIT_FAILED


def _log_to(path: Path, level: str) -> None:
    """The demo's own logs (cloud jobs included) go to a file: the terminal is the view's."""
    from runtime.logs import KeyValueFormatter  # noqa: PLC0415

    handler = logging.FileHandler(path)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = component_parser("demo", __doc__)
    parser.add_argument(
        "--terminals",
        type=positive_int,
        default=defaults.TERMINALS,
        help="POS terminals (default %(default)s)",
    )
    parser.add_argument(
        "--sensors",
        type=whole,
        default=None,
        help="sensors (default: a quarter of the terminals)",
    )
    parser.add_argument(
        "--serial",
        type=whole,
        default=defaults.SERIAL,
        help="terminals over ptys through real edge agents (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=duration_s,
        default=f"{defaults.DURATION_S:g}s",
        help="wall-clock time for the simulated trading day, 08:00-18:00 (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.SEED, help="random seed (default %(default)s)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=defaults.STATE_DIR,
        metavar="DIR",
        help="servers' data, configs and logs; emptied on every run (default %(default)s)",
    )
    parser.add_argument("--plain", action="store_true", help="plain lines, no live view")
    parser.add_argument(
        "--install-missing",
        action="store_true",
        help="as root (or with passwordless sudo), apt-get install a missing Mosquitto or "
        "InfluxDB (make demo does)",
    )
    return parser

"""`tillpulse gateway`: run a gateway, check its config (and with --connect its
broker and InfluxDB), print the example config.

Exit codes (README.md, "Command line"): 0 ok, also after a clean stop on SIGTERM;
1 a worker died, or check-config --connect could not use a server; 2 a bad flag,
config, file or directory, or a listen address in use; 130 interrupted (Ctrl-C,
or SIGTERM before the gateway started). Unreachable InfluxDB and MQTT brokers
(wrong credentials included) are not fatal at run: the gateway spools and
retries with backoff, logging each attempt (docs/gateway.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from gateway.config import load_checked
from runtime.cli import (
    EXIT_FAILED,
    add_command,
    add_commands,
    component_parser,
    log_level,
    run_command,
)
from runtime.deploy_files import add_sample_config, packaged, print_or_write
from runtime.lifecycle import ServiceSignals, sigterm_interrupts
from runtime.logs import configure_logging, kv
from runtime.preflight import probe_influx, probe_mqtt

PROG = "tillpulse gateway"

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    parser = component_parser("gateway", __doc__)
    commands = add_commands(parser)
    add_command(
        commands,
        "gateway",
        "run",
        "MQTT -> validate, dedup, aggregate -> spool -> InfluxDB",
        config=True,
    )
    check = add_command(
        commands,
        "gateway",
        "check-config",
        "check the config and what run needs of this machine (state_dir, secrets, TLS files)",
        config=True,
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also log in to the MQTT broker and make an empty write to InfluxDB",
    )
    add_sample_config(commands, "gateway")
    args = parser.parse_args(argv)
    command = {"run": _run, "check-config": _check, "sample-config": _sample}[args.command]
    # SIGTERM before the gateway runs stops it like Ctrl-C (exit 130); once it runs,
    # both stop it cleanly (`_run`).
    with sigterm_interrupts():
        return run_command(PROG, lambda: command(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    from gateway.service import Gateway  # noqa: PLC0415 (mqtt5, influxdb_client: not for --help)

    config = load_checked(args.config)
    configure_logging(log_level(args), json_lines=args.log_json)
    with ServiceSignals("gateway") as signals:
        gateway = Gateway(config)
        signals.running(gateway.stop)
        return signals.exit_code(gateway.run())


def _check(args: argparse.Namespace) -> int:
    config = load_checked(args.config)
    sys.stdout.write(f"{args.config}: ok\n")
    if not args.connect:
        return 0
    configure_logging(log_level(args), json_lines=args.log_json)
    mqtt, influx = config.mqtt, config.influxdb
    probes: list[tuple[str, Callable[[], str | None]]] = [
        (
            f"MQTT broker {mqtt.host}:{mqtt.port}",
            lambda: probe_mqtt(mqtt, client_id=config.gateway.id),
        ),
        (f"InfluxDB {influx.url}", lambda: probe_influx(influx)),
    ]
    failed = False
    for server, probe in probes:
        log.info("probing", extra=kv(server=server))  # each may wait for its timeout
        problem = probe()
        if problem is None:
            sys.stdout.write(f"{server}: ok\n")
        else:
            sys.stderr.write(f"{PROG}: {problem}\n")
            failed = True
    return EXIT_FAILED if failed else 0


def _sample(args: argparse.Namespace) -> int:
    return print_or_write(args, packaged("gateway", "gateway.example.toml"))

"""``tillpulse gateway``: run a gateway, or check its config."""

from __future__ import annotations

import argparse
import sys
from typing import Final

from gateway.config import load_gateway_config
from gateway.errors import GatewayError
from gateway.service import Gateway
from runtime.config import ConfigError
from runtime.influx_sinks.errors import SinkError
from runtime.lifecycle import stop_on_signals
from runtime.logs import configure_logging

EXIT_CONFIG: Final = 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tillpulse gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="MQTT -> validate, dedup, aggregate -> spool -> InfluxDB")
    check = commands.add_parser("check-config", help="validate the config file and exit")
    for command in (run, check):
        command.add_argument("--config", required=True, help="the gateway's TOML config file")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true")
    args = parser.parse_args(argv)

    try:
        config = load_gateway_config(args.config)
        if args.command == "check-config":
            sys.stdout.write(f"{args.config}: ok\n")
            return 0
        configure_logging(args.log_level, json_lines=args.log_json)
        gateway = Gateway(config)
    except (ConfigError, GatewayError, SinkError, OSError) as exc:
        sys.stderr.write(f"tillpulse gateway: {exc}\n")
        return EXIT_CONFIG
    stop_on_signals(gateway.stop, "gateway")
    return gateway.run()

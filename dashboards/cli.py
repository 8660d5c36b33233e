"""``tillpulse dashboards``: generate the dashboard and provisioning files, push to Grafana.

``push`` and ``check-config`` read a TOML file (dashboards.config); a missing or
invalid one, or an unreadable secret, is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from dashboards import generate
from dashboards.config import load_dashboards_config
from dashboards.errors import DashboardsError
from dashboards.push import push
from runtime.config import ConfigError
from runtime.logs import configure_logging

EXIT_STALE: Final = 1
EXIT_ERROR: Final = 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tillpulse dashboards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="write the dashboards (json/, import/) and the provisioning files",
        description="Writes json/ (for provisioning and push), import/ (for Grafana's "
        "Dashboards > New > Import) and provisioning/ under --out.",
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=generate.DEFAULT_OUT,
        help=f"root directory (default: ./{generate.DEFAULT_OUT}; the repository's is dashboards)",
    )
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is not up to date"
    )
    up = commands.add_parser(
        "push",
        help="upload folder, datasource, dashboards, alert rules and contact point to Grafana",
        description="Grafana, its credentials, the datasource and the webhook come from the "
        "config file (keys: dashboards/deploy/dashboards.example.toml); secrets from the files "
        "it names or TILLPULSE_GRAFANA_TOKEN / TILLPULSE_GRAFANA_PASSWORD and "
        "TILLPULSE_INFLUX_PASSWORD.",
    )
    check = commands.add_parser("check-config", help="validate the push config file and exit")
    for command in (up, check):
        command.add_argument("--config", required=True, help="the push's TOML config file")
    up.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    if args.command == "generate":
        return _generate(args.out, check=args.check)
    prog = f"tillpulse dashboards {args.command}"
    try:
        config = load_dashboards_config(args.config)
        if args.command == "check-config":
            sys.stdout.write(f"{args.config}: ok\n")
            return 0
        configure_logging(args.log_level)
        report = push(config.push_settings())
    except (ConfigError, DashboardsError) as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    contact = "contact point updated" if report.contact_point else "contact point left alone"
    sys.stdout.write(
        f"pushed to Grafana {report.grafana_version}: {report.dashboards} dashboards, "
        f"{report.rules} alert rules, {contact}\n"
    )
    return 0


def _generate(root: Path, *, check: bool) -> int:
    if check:
        stale = generate.stale(root)
        for relative in stale:
            sys.stderr.write(f"out of date: {root / relative}\n")
        if stale:
            sys.stderr.write(f"run `tillpulse dashboards generate --out {root}`\n")
        return EXIT_STALE if stale else 0
    try:
        written = generate.write(root)
    except OSError as exc:
        sys.stderr.write(f"tillpulse dashboards generate: {exc}\n")
        return EXIT_ERROR
    sys.stdout.write(f"wrote {len(written)} files under {root.resolve()}\n")
    return 0

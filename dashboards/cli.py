"""``tillpulse dashboards``: generate the dashboard and provisioning files, push to Grafana."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from dashboards import generate
from dashboards.errors import DashboardsError
from dashboards.provisioning import InfluxSettings
from dashboards.push import Credential, PushSettings, push
from runtime.logs import configure_logging

EXIT_STALE: Final = 1
EXIT_ERROR: Final = 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tillpulse dashboards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write dashboards/json and dashboards/provisioning")
    gen.add_argument("--out", type=Path, default=generate.PACKAGE_DIR, help="root directory")
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is not up to date"
    )
    up = commands.add_parser(
        "push",
        help="upload folder, datasource, dashboards, alert rules and contact point to Grafana",
        description="Credentials from the environment: GRAFANA_TOKEN, or GRAFANA_USER and "
        "GRAFANA_PASSWORD. The datasource: INFLUX_URL, INFLUX_DB (required), INFLUX_USER, "
        "INFLUX_PASSWORD. The webhook contact point: TILLPULSE_ALERT_WEBHOOK_URL (optional).",
    )
    up.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000")
    up.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    up.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    if args.command == "generate":
        return _generate(args.out, check=args.check)
    configure_logging(args.log_level)
    try:
        settings = push_settings(args.url, args.timeout, os.environ)
        report = push(settings)
    except DashboardsError as exc:
        sys.stderr.write(f"tillpulse dashboards push: {exc}\n")
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
            sys.stderr.write("run `tillpulse dashboards generate` and commit the result\n")
        return EXIT_STALE if stale else 0
    try:
        written = generate.write(root)
    except OSError as exc:
        sys.stderr.write(f"tillpulse dashboards generate: {exc}\n")
        return EXIT_ERROR
    sys.stdout.write(f"wrote {len(written)} files under {root}\n")
    return 0


def push_settings(url: str, timeout_s: float, env: Mapping[str, str]) -> PushSettings:
    """Validated push settings from the command line and the environment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DashboardsError(f"--url must be http(s)://host[:port], not {url!r}")
    if timeout_s <= 0:
        raise DashboardsError("--timeout must be positive")
    missing = [name for name in ("INFLUX_URL", "INFLUX_DB") if not env.get(name)]
    if missing:
        raise DashboardsError(f"set {' and '.join(missing)}: the datasource Grafana reads from")
    influx = InfluxSettings(
        url=env["INFLUX_URL"],
        database=env["INFLUX_DB"],
        user=env.get("INFLUX_USER", ""),
        password=env.get("INFLUX_PASSWORD", ""),
    )
    return PushSettings(
        url=url.rstrip("/"),
        credential=_credential(env),
        influx=influx,
        webhook_url=env.get("TILLPULSE_ALERT_WEBHOOK_URL") or None,
        timeout_s=timeout_s,
    )


def _credential(env: Mapping[str, str]) -> Credential:
    token = env.get("GRAFANA_TOKEN")
    if token:
        return token
    user, password = env.get("GRAFANA_USER"), env.get("GRAFANA_PASSWORD")
    if user and password:
        return (user, password)
    raise DashboardsError(
        "no Grafana credentials: set GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD"
    )

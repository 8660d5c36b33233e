"""`tillpulse dashboards`: generate the dashboard and provisioning files, push to Grafana.

`push` and `check-config` read a TOML config (-c/--config; `sample-config` prints
the annotated example) and the secret files it names; `check-config` checks exactly
what `push` reads before it sends anything, and with --connect asks Grafana too.
Exit codes: 0 ok, 1 Grafana unreachable or refusing (or `generate --check`: a file
not up to date), 2 a bad option, config or secret, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dashboards import generate
from runtime.cli import (
    MACHINE_ERRORS,
    OperatorError,
    RuntimeFailure,
    add_command,
    add_commands,
    component_parser,
    log_level,
    run_command,
)
from runtime.deploy_files import add_sample_config, packaged, print_or_write
from runtime.lifecycle import sigterm_interrupts

if TYPE_CHECKING:
    from dashboards.push import PushSettings

EXIT_STALE: Final = 1


def main(argv: list[str]) -> int:
    parser = component_parser("dashboards", __doc__)
    commands = add_commands(parser)
    gen = add_command(
        commands,
        "dashboards",
        "generate",
        "write the dashboards: json/ (for provisioning and push), import/ (for Grafana's "
        "Dashboards > New > Import) and provisioning/ under --out",
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=generate.DEFAULT_OUT,
        metavar="DIR",
        help=f"root directory (default ./{generate.DEFAULT_OUT}; the repository's is dashboards)",
    )
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is not up to date"
    )
    add_command(
        commands,
        "dashboards",
        "push",
        "upload folder, datasource, dashboards, alert rules and contact point to Grafana "
        "(secrets from the files the config names, or TILLPULSE_GRAFANA_TOKEN / "
        "TILLPULSE_GRAFANA_PASSWORD and TILLPULSE_INFLUX_PASSWORD)",
        config=True,
    )
    check = add_command(
        commands,
        "dashboards",
        "check-config",
        "check the config and the secrets push reads, and exit",
        config=True,
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also ask Grafana (its version, the credentials, the datasource), changing nothing",
    )
    add_sample_config(commands, "dashboards")
    args = parser.parse_args(argv)
    prog = f"tillpulse dashboards {args.command}"
    with sigterm_interrupts():  # a push is a job, not a service: SIGTERM stops it as Ctrl-C
        return run_command(prog, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    if args.command == "generate":
        return _generate(args.out, check=args.check)
    if args.command == "sample-config":
        return print_or_write(args, packaged("dashboards", "dashboards.example.toml"))
    settings = push_settings(args.config)
    # imported here: Grafana's client library is most of --help's time otherwise
    from dashboards.errors import PushError  # noqa: PLC0415
    from dashboards.push import check_grafana, push  # noqa: PLC0415
    from runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging(log_level(args), json_lines=args.log_json)
    try:
        if args.command == "check-config":
            sys.stdout.write(f"{args.config}: ok\n")
            if args.connect:
                version = check_grafana(settings)
                sys.stdout.write(f"Grafana {settings.url}: ok (version {version})\n")
            return 0
        report = push(settings)
    except PushError as exc:  # Grafana's answer, or none: not the config's fault
        raise RuntimeFailure(str(exc)) from exc
    contact = "contact point updated" if report.contact_point else "contact point left alone"
    sys.stdout.write(
        f"pushed to Grafana {report.grafana_version}: {report.dashboards} dashboards, "
        f"{report.rules} alert rules, {contact}\n"
    )
    return 0


def push_settings(config: str) -> PushSettings:
    """What push needs, its secrets read: the one check of push and check-config. A
    `runtime.config.ConfigError` (an OperatorError) names the file or key and the fix."""
    from dashboards.config import load_dashboards_config  # noqa: PLC0415

    return load_dashboards_config(config).push_settings()


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
        if exc.errno in MACHINE_ERRORS:  # a full disk: `run_command` names the fix
            raise OSError(exc.errno, exc.strerror, exc.filename or str(root)) from exc
        raise OperatorError(
            f"--out {root}: cannot write {exc.filename}: {exc.strerror}: "
            "choose a directory you can write with --out DIR"
        ) from exc
    sys.stderr.write(f"wrote {len(written)} files under {root.resolve()}\n")
    return 0

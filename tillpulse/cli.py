"""The `tillpulse` console entry point: one subcommand per component.

Each component's command line lives in its own package (``<package>.cli``,
also runnable as ``python -m <package>``); this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple


class Component(NamedTuple):
    package: str
    help: str
    issue: int  # the tracker issue that delivers it


COMPONENTS: Final[dict[str, Component]] = {
    "edge": Component("edge", "edge agent: serial devices -> durable outbox -> MQTT", 4),
    "gateway": Component("gateway", "gateway: MQTT -> validate, dedup, aggregate -> InfluxDB", 5),
    "cloud": Component("cloud", "cloud jobs: anomaly detection, alerts, evaluation", 6),
    "sim": Component("firmware_sim", "firmware simulator: fleets with injected faults", 3),
    "dashboards": Component("dashboards", "Grafana dashboards as code, push to Grafana", 7),
    "broker": Component(
        "broker", "broker accounts: provision agents and devices from the registry", 16
    ),
    "demo": Component("tillpulse.demo", "a simulated fleet through the whole local pipeline", 8),
}

EXIT_NOT_AVAILABLE: Final = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tillpulse", description="Edge-to-cloud telemetry for payment terminal fleets."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, component in COMPONENTS.items():
        commands.add_parser(name, help=component.help, add_help=False)
    args, rest = parser.parse_known_args(argv)
    return run_component(args.command, rest)


def run_component(name: str, argv: Sequence[str]) -> int:
    """Run one component's command line with ``argv``; used by each ``__main__``."""
    component = COMPONENTS[name]
    entry = _find_entry(component.package)
    if entry is None:
        sys.stderr.write(
            f"tillpulse {name}: not available yet; it is delivered by issue #{component.issue} "
            f"({component.help}).\n"
        )
        return EXIT_NOT_AVAILABLE
    return entry(list(argv))


def _find_entry(package: str) -> Callable[[list[str]], int] | None:
    try:
        module = importlib.import_module(f"{package}.cli")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.cli":
            raise  # a real missing dependency inside an existing CLI
        return None
    entry: Callable[[list[str]], int] = module.main
    return entry

"""The `tillpulse` console entry point: one subcommand per component.

Each component's command line lives in its own package (``<package>.cli``,
also runnable as ``python -m <package>``); this module only dispatches, after
checking that the component's extra is installed (an ``[edge]``-only install on a
Raspberry Pi has no gateway, cloud or simulator). The conventions every component
follows (global options, exit codes) are in `runtime.cli`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

# Only the standard library's light modules here: everything else is imported inside
# main's try, so a Ctrl-C during those imports (msgspec's C extension among them) is
# "interrupted", exit 130, not a traceback and death by SIGINT.
EXIT_INTERRUPTED: Final = 130  # = runtime.cli.EXIT_INTERRUPTED (README, "Command line")


class Component(NamedTuple):
    package: str
    help: str
    extra: str  # pip install 'tillpulse[<extra>]' installs what it needs
    needs: tuple[str, ...]  # the top-level modules of that extra's libraries


_EDGE: Final = ("paho", "serial", "msgspec", "cobs")
_GATEWAY: Final = (*_EDGE, "influxdb_client")
_CLOUD: Final = (*_GATEWAY, "sklearn", "skops", "rich")
_SIM: Final = (*_EDGE, "rich")

COMPONENTS: Final[dict[str, Component]] = {
    "edge": Component(
        "edge", "edge agent: serial devices -> durable outbox -> MQTT", "edge", _EDGE
    ),
    "gateway": Component(
        "gateway", "gateway: MQTT -> validate, dedup, aggregate -> InfluxDB", "gateway", _GATEWAY
    ),
    "cloud": Component(
        "cloud", "cloud jobs: anomaly detection, alerts, evaluation", "cloud", _CLOUD
    ),
    "sim": Component(
        "firmware_sim", "firmware simulator: fleets with injected faults", "sim", _SIM
    ),
    "dashboards": Component(
        "dashboards",
        "Grafana dashboards as code, push to Grafana",
        "dashboards",
        ("grafana_client",),
    ),
    "broker": Component(
        "broker", "broker accounts: provision agents and devices from the registry", "", ()
    ),
    "demo": Component(
        "tillpulse.demo",
        "a simulated fleet through the whole local pipeline",
        "cloud,sim",
        (*_CLOUD, *_SIM),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry (``argv`` None: this process's own arguments)."""
    try:
        return _interruptible(argv)
    finally:  # also after --help and a usage error (SystemExit)
        if argv is None:
            # The work is over and the exit code decided: a Ctrl-C while the interpreter
            # exits (flushing, joining threads, after it put SIGINT back to the default)
            # would end the process by SIGINT or with a traceback instead.
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interruptible(argv: Sequence[str] | None) -> int:
    # Until a component sets its own handlers, SIGTERM stops as Ctrl-C does, and either
    # during the imports below is "interrupted", exit 130, not a traceback.
    try:
        from runtime.lifecycle import sigterm_interrupts  # noqa: PLC0415

        with sigterm_interrupts():
            return _dispatch(argv)
    except KeyboardInterrupt:
        sys.stderr.write("tillpulse: interrupted\n")
        return EXIT_INTERRUPTED


def _dispatch(argv: Sequence[str] | None) -> int:
    from runtime.cli import Parser  # noqa: PLC0415

    parser = Parser(
        prog="tillpulse",
        description="Edge-to-cloud telemetry for payment terminal fleets.",
        epilog="Each component: tillpulse COMPONENT --help. Conventions: README.md, "
        '"Command line".',
    )
    parser.add_argument("--version", action=_ShowVersion, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMPONENT", required=True)
    for name, component in COMPONENTS.items():
        commands.add_parser(name, help=component.help, add_help=False)
    args, rest = parser.parse_known_args(argv)
    return run_component(args.command, rest)


def run_component(name: str, argv: Sequence[str]) -> int:
    """Run one component's command line with ``argv``; used by each ``__main__``."""
    component = COMPONENTS[name]
    missing = [module for module in component.needs if importlib.util.find_spec(module) is None]
    if missing:
        from runtime.cli import EXIT_USAGE  # noqa: PLC0415

        sys.stderr.write(
            f"tillpulse {name}: not installed here (missing {', '.join(missing)}): "
            f"pip install 'tillpulse[{component.extra}]'\n"
        )
        return EXIT_USAGE
    entry: Callable[[list[str]], int] = importlib.import_module(f"{component.package}.cli").main
    return entry(list(argv))


class _ShowVersion(argparse.Action):
    """``--version``, the version looked up only when asked: importlib.metadata (with the
    email, zipfile and csv it imports) would cost every command ~1.6 MiB, the edge agent
    on a Raspberry Pi among them (BENCHMARKS.md, "Edge agent footprint")."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"tillpulse {_version()}\n")
        parser.exit()


def _version() -> str:
    import importlib.metadata  # noqa: PLC0415 (a tenth of a second: only for --version)

    try:
        return importlib.metadata.version("tillpulse")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown (not installed)"

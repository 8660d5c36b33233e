"""tillpulse edge: run the agent, check its config, show its status; write the
example config and the systemd unit of this installation.

Exit codes: 0 ok; 1 a runtime failure (check-config --connect: the broker refused
or is unreachable); 2 a bad option, config or state dir (the systemd unit does not
restart on it: a person must fix it); 130 interrupted. `status` exits 0 when the
agent runs healthy, 3 when it runs degraded (the reasons are shown), 4 when there
is no fresh status (not running, stopped, or died).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edge.deploy_files import DEFAULT_UNIT_DIR, EXAMPLE_CONFIG, UNIT_NAME
from runtime.cli import (
    EXIT_NOT_RUNNING,
    OperatorError,
    RuntimeFailure,
    add_command,
    add_commands,
    component_parser,
    log_level,
    run_command,
)
from runtime.deploy_files import add_sample_config, packaged, print_or_write, write_file
from runtime.preflight import check_file

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.status import AgentStatus
    from runtime.lifecycle import ServiceSignals

# The agent, paho, pyserial and msgspec are imported by the commands that use them,
# so --help and the usage errors stay fast on a Raspberry Pi.

EXIT_DEGRADED: Final = 3
STALE_AFTER_S: Final = 30.0
PROG: Final = "tillpulse edge"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return run_command(PROG, lambda: int(args.work(args)), debug=args.debug)


def _parser() -> argparse.ArgumentParser:
    parser = component_parser("edge", __doc__)
    commands = add_commands(parser)
    add_command(
        commands, "edge", "run", "run the agent (what the systemd unit starts)", config=True
    ).set_defaults(work=_run)
    check = add_command(
        commands,
        "edge",
        "check-config",
        "check the config and what it names (files, state dir), as run does, and exit",
        config=True,
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also log in to the broker as the agent (a running agent is disconnected "
        "once and reconnects)",
    )
    check.set_defaults(work=_check_config)
    status = add_command(
        commands,
        "edge",
        "status",
        "outbox depth, link state, drops, per-port counters",
        config=True,
    )
    status.add_argument("--json", action="store_true", help="print JSON to stdout instead")
    status.set_defaults(work=_status)
    add_sample_config(commands, "edge").set_defaults(
        work=lambda args: print_or_write(args, packaged("edge", EXAMPLE_CONFIG))
    )
    unit = add_command(
        commands, "edge", "install-unit", f"write the systemd unit {UNIT_NAME} of this installation"
    )
    unit.add_argument(
        "--out", metavar="DIR", default=DEFAULT_UNIT_DIR, help="where to write it (%(default)s)"
    )
    unit.add_argument(
        "--venv",
        metavar="PATH",
        default=sys.prefix,
        help="the virtualenv ExecStart runs tillpulse from (default: this one, %(default)s)",
    )
    unit.add_argument("--print", action="store_true", help="print the unit, write nothing")
    unit.add_argument("--force", action="store_true", help="replace an existing unit file")
    unit.set_defaults(work=_install_unit)
    return parser


def _config(path: str, *, checked: bool = True) -> EdgeConfig:
    """The config at ``path``; ``checked``: with what run needs (`check_edge_config`)."""
    from edge.config import check_edge_config, load_edge_config  # noqa: PLC0415
    from runtime.config import ConfigError  # noqa: PLC0415

    check_file(path, "-c/--config", None, f"write one with `{PROG} sample-config --out {path}`")
    try:
        config = load_edge_config(path)
    except ConfigError as exc:
        raise OperatorError(str(exc)) from exc
    if checked:
        check_edge_config(config, path)
    return config


def _run(args: argparse.Namespace) -> int:
    from edge.unused_imports import load_on_first_use  # noqa: PLC0415
    from runtime.lifecycle import ServiceSignals  # noqa: PLC0415
    from runtime.logs import configure_logging  # noqa: PLC0415

    load_on_first_use()  # before paho is imported
    with ServiceSignals("edge agent") as signals:
        config = _config(args.config)
        lock = _own_state_dir(config.agent.state_dir, args.config)
        try:
            configure_logging(log_level(args), json_lines=args.log_json)
            return _run_agent(config, signals)
        finally:
            os.close(lock)


def _run_agent(config: EdgeConfig, signals: ServiceSignals) -> int:
    from edge.agent import Agent  # noqa: PLC0415
    from edge.errors import EdgeError  # noqa: PLC0415
    from runtime.config import ConfigError  # noqa: PLC0415

    try:
        agent = Agent(config)
    except (ConfigError, EdgeError) as exc:  # e.g. an outbox file of a newer version
        raise OperatorError(str(exc)) from exc
    signals.running(agent.stop)
    return signals.exit_code(agent.run())


def _own_state_dir(state_dir: str, source: str) -> int:
    """This agent's lock on its state dir (a descriptor to close when it stops): a second
    agent on it would publish the same sequence numbers under the same client id."""
    from runtime.lifecycle import lock_directory  # noqa: PLC0415

    lock = lock_directory(state_dir)
    if lock is None:
        raise OperatorError(
            f"[agent] state_dir {state_dir} (in {source}): another edge agent runs with it: "
            "stop that one (systemctl stop tillpulse-edge), or give this one its own state_dir"
        )
    return lock


def _check_config(args: argparse.Namespace) -> int:
    config = _config(args.config)
    sys.stdout.write(f"{args.config}: ok\n")
    if not args.connect:
        return 0
    from runtime.preflight import probe_mqtt  # noqa: PLC0415

    problem = probe_mqtt(config.mqtt, client_id=config.agent.device)
    if problem is not None:
        raise RuntimeFailure(problem)
    sys.stdout.write(f"mqtt {config.mqtt.host}:{config.mqtt.port}: ok\n")
    return 0


def _install_unit(args: argparse.Namespace) -> int:
    from edge.deploy_files import unit_text  # noqa: PLC0415

    text = unit_text(args.venv)
    if args.print:
        sys.stdout.write(text)
        return 0
    target = write_file(Path(args.out) / UNIT_NAME, text, force=args.force)
    sys.stderr.write(
        f"wrote {target}\nnow: systemctl daemon-reload && systemctl enable --now tillpulse-edge\n"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    import msgspec  # noqa: PLC0415

    from edge.status import read_status  # noqa: PLC0415

    state_dir = _config(args.config, checked=False).agent.state_dir
    try:
        status = read_status(state_dir)
    except (OSError, msgspec.DecodeError) as exc:
        raise OperatorError(
            f"no status in {state_dir} (is the agent running? systemctl status "
            f"tillpulse-edge): {exc}",
            exit_code=EXIT_NOT_RUNNING,
        ) from exc
    if args.json:
        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        sys.stdout.write(_render(status))
    fresh = time.time() - status.written_unix < STALE_AFTER_S
    if not (status.running and fresh):
        return EXIT_NOT_RUNNING
    return EXIT_DEGRADED if status.degraded else 0


def _liveness(running: bool, age: float) -> str:
    if not running:
        return ", STOPPED"
    return ", STALE: agent not running?" if age >= STALE_AFTER_S else ""


def _render(status: AgentStatus) -> str:
    age = time.time() - status.written_unix
    link, sent, box = status.link, status.publishing, status.outbox
    last_ack = (
        "never" if sent.last_ack_unix is None else f"{time.time() - sent.last_ack_unix:.0f}s ago"
    )
    lines = [
        f"agent      {status.site}/{status.device}  (status written {age:.0f}s ago"
        + _liveness(status.running, age)
        + ")",
        f"link       {'connected' if link.connected else 'DISCONNECTED'}  connects={link.connects}"
        f" failures={link.connect_failures} last_ack={last_ack}"
        + (f" last_error={link.last_error!r}" if link.last_error else ""),
        f"published  {sent.published}  acked={sent.acked}  in_flight={sent.inflight}"
        f"  refused={sent.refused}  dead_lettered={sent.dead_lettered}  errors={sent.errors}",
        *(
            f"refused    {device} refused={refusals.refused}"
            f' dead_lettered={refusals.dead_lettered} last="{refusals.last_reason}"'
            f" topic={refusals.last_topic}"
            for device, refusals in sorted(sent.refusals.items())
        ),
        f"outbox     high={box.depth_high} low={box.depth_low} bytes={box.size_bytes}"
        f" oldest={box.oldest_age_s or 0:.0f}s",
        f"dropped    overflow={box.dropped_overflow} expired={box.dropped_expired}"
        f"  duplicates={box.duplicates}",
        f"deadletter kept={status.deadletters_kept} evicted={status.deadletters_evicted}"
        f" lost={status.deadletters_lost}",
        f"health     samples_skipped={status.health_samples_skipped}",
        *(f"DEGRADED   {reason}" for reason in status.degraded),
    ]
    for source in status.sources:
        frames = source.frames
        bad = 0 if frames is None else frames.frames_bad
        lines.append(
            f"serial     {source.port} {'open' if source.open else 'CLOSED'}"
            f" stored={source.stored} dup={source.duplicates} invalid={source.invalid}"
            f" pci_refused={source.pci_refused} backpressure={source.backpressure}"
            f" ack_timeouts={source.ack_timeouts} bad_frames={bad} errors={source.errors}"
        )
    return "\n".join(lines) + "\n"

"""``tillpulse edge``: run the agent, check its config, show its status; write the
example config and the systemd unit of this installation.

Exit codes: 2 for a bad config or an unusable state dir (the systemd unit does
not restart on it: a person must fix it); ``status`` exits 0 when the agent
runs healthy, 3 when it runs degraded (the reasons are shown), 4 when there is
no fresh status (not running, stopped, or died).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Final

import msgspec

from edge.agent import Agent
from edge.config import load_edge_config
from edge.deploy_files import DEFAULT_UNIT_DIR, UNIT_NAME, sample_config, unit_text, write_file
from edge.errors import EdgeError
from edge.status import AgentStatus, read_status
from runtime.config import ConfigError
from runtime.lifecycle import stop_on_signals
from runtime.logs import configure_logging

EXIT_CONFIG: Final = 2  # also an unusable state dir: RestartPreventExitStatus in the unit
EXIT_DEGRADED: Final = 3
EXIT_STATUS_UNKNOWN: Final = 4
STALE_AFTER_S: Final = 30.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tillpulse edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "run the agent (what the systemd unit starts)"),
        ("check-config", "validate the config file and exit"),
        ("status", "outbox depth, link state, drops, per-port counters"),
    ]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", required=True, help="the agent's TOML config file")
    commands.choices["run"].add_argument("--log-level", default="info")
    commands.choices["run"].add_argument("--log-json", action="store_true")
    commands.choices["status"].add_argument("--json", action="store_true")
    sample = commands.add_parser("sample-config", help="print the example config to edit")
    sample.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    unit = commands.add_parser(
        "install-unit", help=f"write the systemd unit {UNIT_NAME} of this installation"
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
    args = parser.parse_args(argv)

    try:
        if args.command in ("sample-config", "install-unit"):
            return _deploy_file(args)
        config = load_edge_config(args.config)
        if args.command == "check-config":
            sys.stdout.write(f"{args.config}: ok\n")
            return 0
        if args.command == "status":
            return _show_status(config.agent.state_dir, as_json=args.json)
        configure_logging(args.log_level, json_lines=args.log_json)
        agent = Agent(config)
    except (ConfigError, EdgeError) as exc:
        sys.stderr.write(f"tillpulse edge: {exc}\n")
        return EXIT_CONFIG
    stop_on_signals(agent.stop, "edge agent")
    return agent.run()


def _deploy_file(args: argparse.Namespace) -> int:
    """``sample-config`` and ``install-unit``: print the file, or write it (an existing
    file only with --force)."""
    if args.command == "sample-config":
        text, target = sample_config(), args.out
    else:
        text = unit_text(args.venv)
        target = None if args.print else Path(args.out) / UNIT_NAME
    if target is None:
        sys.stdout.write(text)
        return 0
    sys.stdout.write(f"wrote {write_file(target, text, force=args.force)}\n")
    if args.command == "install-unit":
        sys.stdout.write("now: systemctl daemon-reload && systemctl enable --now tillpulse-edge\n")
    return 0


def _show_status(state_dir: str, *, as_json: bool) -> int:
    try:
        status = read_status(state_dir)
    except (OSError, msgspec.DecodeError) as exc:
        sys.stderr.write(
            f"tillpulse edge: no status in {state_dir} (is the agent running?): {exc}\n"
        )
        return EXIT_STATUS_UNKNOWN
    if as_json:
        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        sys.stdout.write(_render(status))
    fresh = time.time() - status.written_unix < STALE_AFTER_S
    if not (status.running and fresh):
        return EXIT_STATUS_UNKNOWN
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

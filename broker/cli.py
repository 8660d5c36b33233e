"""`tillpulse broker`: provision the broker's accounts from the device registry.

    provision   regenerate the ACL, reconcile the password file, reload the broker
    add         append an [[agent]] to the registry, then provision
    rotate      give an agent a new password, then provision
    revoke      append a [[revoked]] entry to the registry, then provision

    sample-config   print the example registry to edit

Every command prints one line per change and reloads the broker (SIGHUP to the pid
in --pid-file), or prints the command that does. An error is one line naming the
problem and the fix, exit code 2 (130 interrupted). Each option also comes from the
environment (TILLPULSE_BROKER_REGISTRY, ..._DIR, ..._SECRETS_DIR, ..._PID_FILE),
which the compose service broker-admin sets.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Final

from broker.errors import BrokerError
from broker.files import read_text, replace_file
from broker.provision import RELOAD_HINT, apply, broker_pid, reload_broker
from broker.registry import (
    Agent,
    Registry,
    Revocation,
    agent_block,
    load_registry,
    parse_registry,
    revoked_block,
)
from runtime.cli import OperatorError, add_command, add_commands, component_parser, run_command
from runtime.deploy_files import add_sample_config, packaged, print_or_write
from runtime.preflight import check_file

_OPTIONS: Final = {  # option -> (environment variable, required, help)
    "--registry": ("TILLPULSE_BROKER_REGISTRY", True, "the registry TOML file"),
    "--broker-dir": ("TILLPULSE_BROKER_DIR", True, "the broker's directory of passwd and acl"),
    "--secrets-dir": ("TILLPULSE_BROKER_SECRETS_DIR", False, "where new passwords are written"),
    "--pid-file": ("TILLPULSE_BROKER_PID_FILE", False, "mosquitto's pid_file, to SIGHUP it"),
}


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return run_command("tillpulse broker", lambda: int(args.work(args)), debug=args.debug)


def _provision(args: argparse.Namespace) -> int:
    for option, (variable, required, _) in _OPTIONS.items():
        if required and getattr(args, option[2:].replace("-", "_")) is None:
            raise OperatorError(f"no {option}: pass {option} PATH or set {variable}")
    check_file(
        args.registry,
        f"--registry ({_OPTIONS['--registry'][0]})",
        None,
        "write the registry there (tillpulse broker sample-config --out FILE)",
    )
    try:
        registry = load_registry(args.registry)
        pid = None if args.pid_file is None else broker_pid(args.pid_file)
        if args.command == "add":
            registry = _add(registry, Agent(args.agent, args.site, tuple(args.device)))
        elif args.command == "revoke":
            registry = _revoke(registry, args.agent, args.reason)
        elif args.command == "rotate":
            _check_active(registry, args.agent)
        rotate = {args.agent} if args.command == "rotate" else set()
        for line in apply(registry, args.broker_dir, secrets_dir=args.secrets_dir, rotate=rotate):
            _say(line)
        if pid is None:
            _say(f"reload the broker to apply: {RELOAD_HINT}")
        else:
            reload_broker(pid)
            _say(f"reloaded the broker, pid {pid}")
    except BrokerError as exc:  # each names the problem and the fix
        raise OperatorError(str(exc)) from exc
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = component_parser("broker", __doc__)
    commands = add_commands(parser)
    for name, help_text in [
        ("provision", "regenerate the ACL and password file from the registry, reload"),
        ("add", "add an agent (a Pi) with its devices to the registry, provision"),
        ("rotate", "give an agent a new password, provision"),
        ("revoke", "revoke an agent (the broker disconnects it at once), provision"),
    ]:
        command = add_command(commands, "broker", name, help_text)
        for option, (variable, _, option_help) in _OPTIONS.items():
            default = os.environ.get(variable)
            command.add_argument(
                option,
                type=Path,
                metavar="PATH",
                default=None if default is None else Path(default),
                help=f"{option_help} (env {variable})",
            )
        if name != "provision":
            command.add_argument("--agent", required=True, help="the agent's id")
        command.set_defaults(work=_provision)
    add = commands.choices["add"]
    add.add_argument("--site", required=True, help="its site's id (a [[site]] of the registry)")
    add.add_argument(
        "--device", action="append", default=[], help="a device it reads (repeat the option)"
    )
    commands.choices["revoke"].add_argument("--reason", required=True, help="e.g. stolen")
    add_sample_config(commands, "broker").set_defaults(
        work=lambda args: print_or_write(args, packaged("broker", "registry.example.toml"))
    )
    return parser


def _add(registry: Registry, agent: Agent) -> Registry:
    revocation = registry.revocation(agent.id)
    if revocation is not None:
        raise BrokerError(
            f"agent {agent.id} was revoked ({revocation.reason}, {revocation.at}): to re-enable "
            f"it, delete its [[revoked]] entry from {registry.source} (keep or add its "
            "[[agent]] entry) and run `tillpulse broker provision`; it gets a new password"
        )
    if agent.id in registry.listed:
        raise BrokerError(
            f"agent {agent.id} is already in {registry.source}: edit its entry there "
            "and run `tillpulse broker provision`"
        )
    return _append(registry, agent_block(agent), f"added [[agent]] {agent.id}")


def _revoke(registry: Registry, agent_id: str, reason: str) -> Registry:
    revocation = registry.revocation(agent_id)
    if revocation is not None:
        raise BrokerError(f"agent {agent_id} is already revoked ({revocation.reason})")
    if agent_id not in registry.listed:
        raise BrokerError(f"unknown agent {agent_id}: no [[agent]] of {registry.source} has it")
    at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    block = revoked_block(Revocation(agent_id, reason, at))
    return _append(registry, block, f"added [[revoked]] {agent_id}")


def _check_active(registry: Registry, agent_id: str) -> None:
    if registry.agent(agent_id) is not None:
        return
    if registry.revocation(agent_id) is not None:
        raise BrokerError(
            f"agent {agent_id} is revoked: re-enable it first (`broker add` says how)"
        )
    raise BrokerError(f"unknown agent {agent_id}: no [[agent]] of {registry.source} has it")


def _append(registry: Registry, block: str, change: str) -> Registry:
    """Append ``block`` to the registry file as text (its comments stay), once the
    whole file with it is valid."""
    path = Path(registry.source)
    text = read_text(path)
    if text and not text.endswith("\n"):
        text += "\n"
    text += block
    updated = parse_registry(text, registry.source)
    replace_file(path, text)
    _say(f"{change} to {path}")
    return updated


def _say(line: str) -> None:
    # what it changed, like every "wrote FILE" of tillpulse: stderr (stdout is for output)
    sys.stderr.write(line + "\n")

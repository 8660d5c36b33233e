"""Apply the registry to a broker: its ACL and password file, then a reload.

The broker directory (the volume mosquitto-passwd in docker-compose.yml) holds
    ``acl``      rendered whole from the registry (broker.acl) on every apply;
    ``passwd``   the password file, reconciled line by line: every active agent
                 without an entry gets a new random password, agents that are
                 revoked or no longer listed lose theirs, and every other line
                 (the service accounts the broker container's entrypoint writes
                 from its environment) is kept as it was;
    ``agents``   the agent accounts this tool manages, one a line: how it tells
                 an agent dropped from the registry from a service account.
A new password is written once, to ``<secrets dir>/<agent>.password`` (0600, in a
0700 directory), for the field engineer to copy to the Pi; it is never printed,
logged or put on a command line. Secrets are written before the password file, so
no password is in force that nobody has.

Every file is replaced atomically with the old file's owner and mode (broker.files):
the broker (user ``mosquitto``) must still read it after the reload. Mosquitto
re-reads both files on SIGHUP, without a restart: a client whose entry is gone is
disconnected at once and refused when it reconnects, the others stay connected.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection
from pathlib import Path
from typing import Final

from broker.acl import render_acl
from broker.errors import ProvisionError
from broker.files import read_text, replace_file
from broker.passwords import PasswordFile, new_password
from broker.registry import Registry
from runtime.lifecycle import pid_exists

ACL: Final = "acl"
PASSWD: Final = "passwd"
MANAGED: Final = "agents"
_MANAGED_HEADER: Final = (
    "# Agent accounts in passwd managed by `tillpulse broker provision`; do not edit.\n"
)
RELOAD_HINT: Final = (
    "docker-compose kill -s SIGHUP mosquitto  "
    "(or kill -HUP the pid in mosquitto's pid_file, /mosquitto/data/mosquitto.pid)"
)


def apply(
    registry: Registry,
    broker_dir: Path,
    *,
    secrets_dir: Path | None,
    rotate: Collection[str] = (),
) -> list[str]:
    """Write ``broker_dir``'s acl and passwd for ``registry``; new passwords (the agents
    without an entry, and those in ``rotate``) go to ``secrets_dir``. Returns one line
    per change. Raises `ProvisionError`."""
    if not broker_dir.is_dir():
        raise ProvisionError(
            f"broker dir {broker_dir} is not a directory: give the directory of the "
            "broker's passwd and acl (in the stack, the volume mosquitto-passwd)"
        )
    passwd = PasswordFile(read_text(broker_dir / PASSWD))
    managed = {
        line for line in read_text(broker_dir / MANAGED).splitlines() if not line.startswith("#")
    }
    changes: list[str] = []

    new: dict[str, str] = {}  # agent -> its new password
    for agent in registry.agents:
        if agent.id in rotate or agent.id not in passwd:
            new[agent.id] = new_password()
        elif agent.id not in managed:
            changes.append(f"adopted {agent.id}: its existing password entry is kept")
    written = _write_secrets(new, secrets_dir) if new else {}
    for agent in registry.agents:
        if agent.id in new:
            verb = "rotated" if agent.id in passwd else "added"
            passwd.set(agent.id, new[agent.id])
            changes.append(f"{verb} {agent.id}: password written to {written[agent.id]}")

    active = {agent.id for agent in registry.agents}
    for revocation in registry.revocations:
        if passwd.remove(revocation.agent):
            changes.append(f"revoked {revocation.agent} ({revocation.reason}): account removed")
    for agent_id in sorted(managed - active):
        if passwd.remove(agent_id):
            changes.append(f"removed {agent_id}: no longer in the registry, account removed")

    replace_file(broker_dir / PASSWD, passwd.text())
    replace_file(broker_dir / ACL, render_acl(registry))
    replace_file(broker_dir / MANAGED, _MANAGED_HEADER + "".join(f"{a}\n" for a in sorted(active)))
    devices = sum(len(agent.publishes_for) for agent in registry.agents)
    changes.append(
        f"wrote {broker_dir / ACL}: {len(registry.agents)} agents ({devices} device ids), "
        f"{len(registry.gateways)} gateways, {len(registry.clouds)} cloud accounts"
    )
    return changes


def broker_pid(pid_file: Path) -> int:
    """The pid of the running broker in ``pid_file`` (mosquitto's pid_file), checked
    before anything is written; raises `ProvisionError`."""
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise ProvisionError(
            f"cannot read the pid file {pid_file} ({exc.strerror}): is the broker running "
            f"with pid_file {pid_file}? Start it, or leave out --pid-file and reload it by hand"
        ) from exc
    if not text.isdigit():
        raise ProvisionError(f"pid file {pid_file} holds no pid: {text[:40]!r}")
    pid = int(text)
    comm = Path(f"/proc/{pid}/comm")
    if Path("/proc/self").is_dir():  # Linux: the name tells a reused pid from the broker
        running = comm.is_file() and comm.read_text().strip() == "mosquitto"
    else:
        running = pid_exists(pid)
    if not running:
        raise ProvisionError(
            f"pid file {pid_file} is stale: pid {pid} is not a running mosquitto; "
            "start the broker, then run the command again"
        )
    return pid


def reload_broker(pid: int) -> None:
    """SIGHUP: the broker re-reads its password file and ACL. Raises `ProvisionError`."""
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ProvisionError(
            f"cannot signal the broker (pid {pid}): {exc.strerror}; run as root or as the "
            "broker's user, in its pid namespace (compose: broker-admin)"
        ) from exc


def _write_secrets(passwords: dict[str, str], secrets_dir: Path | None) -> dict[str, Path]:
    """Write each agent's password to its file; returns the files."""
    if secrets_dir is None:
        raise ProvisionError(
            f"{', '.join(passwords)} need a new password: give --secrets-dir DIR, where "
            "it is written for the field engineer"
        )
    try:
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        secrets_dir.chmod(0o700)
        written = {}
        for agent_id, password in passwords.items():
            written[agent_id] = secrets_dir / f"{agent_id}.password"
            replace_file(written[agent_id], f"{password}\n", mode=0o600)
    except OSError as exc:
        raise ProvisionError(
            f"cannot write to the secrets dir {secrets_dir}: {exc.strerror}; "
            "give a directory this user may write"
        ) from exc
    return written

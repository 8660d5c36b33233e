"""A site's broker: the stack's broker config (deploy/mosquitto) on a real Mosquitto,
its service accounts written by entrypoint.sh and its agents provisioned from a
registry, and `tillpulse broker` run as an operator runs it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.cli import main as broker_cli
from testkit.servers import ManagedServer
from tests.deploy.conftest import (  # clients: the fixture, for the tests here too
    ACCOUNTS,
    Client,
    DeployBroker,
    agent_password,
    clients,  # noqa: F401
    run_entrypoint,
)

# Two sites; at s0001 a Pi reading two terminals and a sensor, and a Pi with one terminal.
REGISTRY = """\
# The test fleet. (An operator's comment: `broker add` and `revoke` must keep it.)
[[site]]
id = "s0001"
name = "Main Street"

[[site]]
id = "s0002"
name = "Station kiosk"

[[agent]]
id = "s0001-pi1"
site = "s0001"
devices = ["s0001-pos1", "s0001-pos2", "s0001-env1"]   # two terminals and a sensor

[[agent]]
id = "s0001-pi2"
site = "s0001"
devices = ["s0001-pos3"]

[[gateway]]
id = "gw1"

[[gateway]]
id = "gw2"

[[cloud]]
id = "cloud"
"""


@dataclass(frozen=True)
class Run:
    """What one `tillpulse broker` command did."""

    code: int
    out: str
    err: str


@dataclass
class Fleet:
    broker: DeployBroker
    registry: Path
    clients: list[Client]

    @property
    def pid_file(self) -> Path:
        return self.broker.data_dir / "mosquitto.pid"  # mosquitto.conf's pid_file

    def broker_command(self, command: str, *args: str, reload: bool = True, **options: Path) -> Run:
        """``tillpulse broker COMMAND`` with this fleet's registry and broker dirs
        (``options``, e.g. ``secrets_dir=``, replace them)."""
        given = {
            "registry": self.registry,
            "broker_dir": self.broker.passwd_dir,
            "secrets_dir": self.broker.secrets_dir,
            **({"pid_file": self.pid_file} if reload else {}),
            **options,
        }
        argv = [command, *args]
        for option, value in given.items():
            argv += [f"--{option.replace('_', '-')}", str(value)]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = broker_cli(argv)
        return Run(code, out.getvalue(), err.getvalue())

    def password(self, agent: str) -> str:
        return agent_password(self.broker, agent)

    def connect(self, username: str, password: str | None = None) -> Client:
        """An MQTT v5 client of ``username`` (an agent's password from its secrets file)."""
        if password is None:
            password = self.password(username)
        client = Client(self.broker.port, username=username, password=password)
        self.clients.append(client)
        return client


@pytest.fixture
def fleet(
    tmp_path: Path,
    _started_servers: list[ManagedServer],
    clients: list[Client],  # noqa: F811
) -> Iterator[Fleet]:
    """The broker with REGISTRY provisioned before it starts (nothing to reload yet)."""
    broker = DeployBroker(tmp_path / "broker")
    run_entrypoint(broker, ACCOUNTS)
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    made = Fleet(broker, registry, clients)
    provisioned = made.broker_command("provision", reload=False)
    assert provisioned.code == 0, provisioned.err
    _started_servers.append(broker)
    broker.start()
    yield made

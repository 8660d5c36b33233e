"""The device registry: the sites, the agents that may publish for their devices, and
the service accounts. One TOML file, kept in version control and reviewed like code
(example: broker/deploy/registry.example.toml)::

    [[site]]
    id = "s0001"
    name = "Main Street"

    [[agent]]                   # a Raspberry Pi running the edge agent
    id = "s0001-pi1"            # its MQTT username, = [agent] device in its config
    site = "s0001"
    devices = ["s0001-pos1", "s0001-pos2", "s0001-env1"]   # its own id is implied

    [[gateway]]                 # reads every device topic, writes its dead letters
    id = "gw1"

    [[cloud]]                   # the cloud jobs: write alerts
    id = "cloud"

    [[monitor]]                 # an operator's watch: reads device data and alerts
    id = "ops-watch"

    [[revoked]]                 # its [[agent]] entry, if any, is ignored from now on
    agent = "s0002-pi1"
    reason = "stolen"
    at = "2026-12-06T10:00:00Z"

Every id is checked with `wire.topics.validate_id`. The file is validated as a whole
before anything is generated from it; an error names the file, the entry and the key.
A device belongs to one active agent: two agents claiming it is an error, so no Pi
can publish for a terminal another Pi speaks for. The tool only ever appends to the
file (`agent_block`, `revoked_block`), as text, so the operator's comments stay.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from broker.errors import RegistryError
from wire.errors import InvalidIdError
from wire.topics import validate_id

# Per kind of entry: its keys, and whether each is required.
_KEYS: Final[Mapping[str, Mapping[str, bool]]] = {
    "site": {"id": True, "name": True},
    "agent": {"id": True, "site": True, "devices": False},
    "gateway": {"id": True},
    "cloud": {"id": True},
    "monitor": {"id": True},
    "revoked": {"agent": True, "reason": True, "at": False},
}


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    site: str
    devices: tuple[str, ...]  # the terminals and sensors it reads, without its own id

    @property
    def publishes_for(self) -> tuple[str, ...]:
        """Every device id it publishes under: its own (health, state) first."""
        return (self.id, *self.devices)


@dataclass(frozen=True, slots=True)
class Revocation:
    agent: str
    reason: str
    at: str


@dataclass(frozen=True, slots=True)
class Registry:
    source: str  # the file, for messages
    sites: tuple[Site, ...]
    agents: tuple[Agent, ...]  # the active ones: a revoked agent's entry is left out
    gateways: tuple[str, ...]
    clouds: tuple[str, ...]
    monitors: tuple[str, ...]
    revocations: tuple[Revocation, ...]
    listed: frozenset[str]  # every [[agent]] id, revoked ones included

    def agent(self, agent_id: str) -> Agent | None:
        return next((agent for agent in self.agents if agent.id == agent_id), None)

    def revocation(self, agent_id: str) -> Revocation | None:
        return next((r for r in self.revocations if r.agent == agent_id), None)


def load_registry(path: Path) -> Registry:
    """Read and validate the registry file; raises `RegistryError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the registry: {exc}") from exc
    return parse_registry(text, str(path))


def parse_registry(text: str, source: str) -> Registry:
    """Validate a registry's text; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from exc
    for kind, value in document.items():
        if kind not in _KEYS:
            known = ", ".join(f"[[{k}]]" for k in _KEYS)
            raise RegistryError(f"{source}: unknown table {kind!r} (known: {known})")
        if not isinstance(value, list):
            raise RegistryError(f"{source}: {kind} must be written [[{kind}]], an array of tables")
    entries = {kind: [_Entry(source, kind, i, t) for i, t in enumerate(document.get(kind, []))]
               for kind in _KEYS}  # fmt: skip

    sites = [Site(e.id("id"), e.text("name")) for e in entries["site"]]
    _unique(entries["site"], [s.id for s in sites], "site id")
    known_sites = {site.id for site in sites}

    revocations = [
        Revocation(e.id("agent"), e.text("reason"), e.text("at") if "at" in e.table else "")
        for e in entries["revoked"]
    ]
    _unique(entries["revoked"], [r.agent for r in revocations], "revoked agent")
    revoked = {r.agent for r in revocations}

    gateways = [e.id("id") for e in entries["gateway"]]
    clouds = [e.id("id") for e in entries["cloud"]]
    monitors = [e.id("id") for e in entries["monitor"]]
    services = entries["gateway"] + entries["cloud"] + entries["monitor"]
    service_ids = gateways + clouds + monitors
    _unique(services, service_ids, "service account id")
    service_of = dict(zip(service_ids, services, strict=True))

    agents: list[Agent] = []
    listed: dict[str, _Entry] = {}
    claimed: dict[str, _Entry] = {}  # device -> the active agent publishing for it
    for entry in entries["agent"]:
        agent = Agent(entry.id("id"), entry.id("site"), entry.ids("devices"))
        if agent.id in listed:
            raise entry.error(f"id {agent.id!r} is already used by {listed[agent.id].name}")
        listed[agent.id] = entry
        if agent.id in service_of:
            raise entry.error(
                f"id {agent.id!r} is the account of {service_of[agent.id].name}: "
                "an agent needs an id of its own"
            )
        if agent.site not in known_sites:
            raise entry.error(
                f"key 'site': {agent.site!r} is not a [[site]] of this registry: "
                "add the site, or fix the id"
            )
        if agent.id in revoked:
            continue
        for device in agent.publishes_for:
            owner = claimed.get(device)
            if owner is entry:
                raise entry.error(f"key 'devices': {device!r} is listed twice")
            if owner is not None:
                raise entry.error(
                    f"device {device!r} is already claimed by {owner.name}: a device "
                    "publishes through one agent; remove it from one of them"
                )
            claimed[device] = entry
        agents.append(agent)
    return Registry(
        source=source,
        sites=tuple(sites),
        agents=tuple(agents),
        gateways=tuple(gateways),
        clouds=tuple(clouds),
        monitors=tuple(monitors),
        revocations=tuple(revocations),
        listed=frozenset(listed),
    )


def agent_block(agent: Agent) -> str:
    """The [[agent]] entry for ``agent``, to append to the registry's text."""
    devices = ", ".join(_string(device) for device in agent.devices)
    return (
        f"\n[[agent]]\nid = {_string(agent.id)}\nsite = {_string(agent.site)}\n"
        f"devices = [{devices}]\n"
    )


def revoked_block(revocation: Revocation) -> str:
    """The [[revoked]] entry for ``revocation``, to append to the registry's text."""
    return (
        f"\n[[revoked]]\nagent = {_string(revocation.agent)}\n"
        f"reason = {_string(revocation.reason)}\nat = {_string(revocation.at)}\n"
    )


def _string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; the caller re-parses the result)."""
    return json.dumps(value, ensure_ascii=False)


class _Entry:
    """One [[kind]] table of the file, read key by key with errors that locate it."""

    def __init__(self, source: str, kind: str, index: int, table: Any) -> None:
        self.source = source
        self.kind = kind
        self.index = index
        self.table: dict[str, Any] = table if isinstance(table, dict) else {}
        label = self.table.get("id", self.table.get("agent"))
        self.name = f"[[{kind}]] #{index + 1}" + (f" ({label})" if isinstance(label, str) else "")
        if not isinstance(table, dict):
            raise self.error("must be a table")
        keys = _KEYS[kind]
        for key in self.table:
            if key not in keys:
                raise self.error(f"unknown key {key!r} (known: {', '.join(keys)})")
        for key, required in keys.items():
            if required and key not in self.table:
                raise self.error(f"key {key!r} is missing")

    def error(self, problem: str) -> RegistryError:
        return RegistryError(f"{self.source}, {self.name}: {problem}")

    def text(self, key: str) -> str:
        value = self.table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"key {key!r} must be a non-empty string")
        return value

    def id(self, key: str) -> str:
        try:
            return validate_id(self.table[key], f"key {key!r}:")
        except InvalidIdError as exc:
            raise self.error(str(exc)) from None

    def ids(self, key: str) -> tuple[str, ...]:
        values = self.table.get(key, [])
        if not isinstance(values, list):
            raise self.error(f"key {key!r} must be a list of ids")
        try:
            return tuple(validate_id(value, f"key {key!r}:") for value in values)
        except InvalidIdError as exc:
            raise self.error(str(exc)) from None


def _unique(entries: list[_Entry], ids: list[str], what: str) -> None:
    first: dict[str, _Entry] = {}
    for entry, value in zip(entries, ids, strict=True):
        if value in first:
            raise entry.error(f"{what} {value!r} is already used by {first[value].name}")
        first[value] = entry

"""The registry file: what is refused, with a message that names the file, the entry
and the key, and what a valid file means (revocations, implied device ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import RegistryError
from broker.registry import Agent, agent_block, load_registry, parse_registry

SITES = '[[site]]\nid = "s0001"\nname = "Main Street"\n'
PI1 = '[[agent]]\nid = "s0001-pi1"\nsite = "s0001"\ndevices = ["s0001-pos1", "s0001-env1"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SITES + PI1.replace("devices =", "device ="),
            "f.toml, [[agent]] #1 (s0001-pi1): unknown key 'device' (known: id, site, devices)",
        ),
        (
            SITES + SITES,
            "f.toml, [[site]] #2 (s0001): site id 's0001' is already used by [[site]] #1 (s0001)",
        ),
        (
            SITES + PI1 + PI1,
            "f.toml, [[agent]] #2 (s0001-pi1): id 's0001-pi1' is already used by "
            "[[agent]] #1 (s0001-pi1)",
        ),
        (
            SITES + PI1 + PI1.replace('"s0001-pi1"', '"s0001-pi2"'),
            "f.toml, [[agent]] #2 (s0001-pi2): device 's0001-pos1' is already claimed by "
            "[[agent]] #1 (s0001-pi1): a device publishes through one agent; "
            "remove it from one of them",
        ),
        (
            SITES + PI1 + '[[agent]]\nid = "s0001-pi2"\nsite = "s0001"\ndevices = ["s0001-pi1"]\n',
            "f.toml, [[agent]] #2 (s0001-pi2): device 's0001-pi1' is already claimed by "
            "[[agent]] #1 (s0001-pi1)",  # an agent's own id is one of its devices
        ),
        (
            PI1,
            "f.toml, [[agent]] #1 (s0001-pi1): key 'site': 's0001' is not a [[site]] of this "
            "registry: add the site, or fix the id",
        ),
        (
            SITES + PI1.replace('"s0001-env1"', '"s0001/env1"'),
            "f.toml, [[agent]] #1 (s0001-pi1): key 'devices': 's0001/env1' is not a valid id: "
            "1-64 characters of A-Z a-z 0-9 _ - . starting with a letter or digit",
        ),
        (
            SITES + PI1.replace("id = ", "id = 7\n# ", 1),
            "f.toml, [[agent]] #1: key 'id': must be a string, got int",
        ),
        (
            SITES + '[[cloud]]\nid = "cloud"\n[[site]]\nid = "s2"\n',
            "[[site]] #2 (s2): key 'name' is missing",
        ),
        (
            SITES + '[[gateway]]\nid = "gw1"\n' + PI1.replace('"s0001-pi1"', '"gw1"'),
            "f.toml, [[agent]] #1 (gw1): id 'gw1' is the account of [[gateway]] #1 (gw1): "
            "an agent needs an id of its own",
        ),
        ("[[agents]]\nid = 1\n", "f.toml: unknown table 'agents' (known: [[site]], [[agent]], "),
        ("[site]\nid = 1\n", "f.toml: site must be written [[site]], an array of tables"),
        ("[[site]\n", "f.toml: not valid TOML: "),
        (
            SITES + '[[revoked]]\nagent = "s0001-pi1"\nreason = ""\n',
            "key 'reason' must be a non-empty string",
        ),
    ],
    ids=[
        "unknown-key",
        "duplicate-site",
        "duplicate-agent",
        "device-of-two-agents",
        "agent-claimed-as-device",
        "unknown-site",
        "invalid-device-id",
        "id-not-a-string",
        "missing-key",
        "agent-named-like-a-service",
        "unknown-table",
        "table-not-array",
        "not-toml",
        "revoked-without-reason",
    ],
)
def test_an_invalid_registry_is_refused_naming_the_file_entry_and_key(
    text: str, message: str
) -> None:
    with pytest.raises(RegistryError) as raised:
        parse_registry(text, "f.toml")
    assert message in str(raised.value), raised.value


def test_a_revoked_agents_entry_is_ignored_and_its_devices_are_free_for_a_new_pi() -> None:
    replacement = PI1.replace('"s0001-pi1"', '"s0001-pi2"')
    revoked = '[[revoked]]\nagent = "s0001-pi1"\nreason = "stolen"\nat = "2026-12-06"\n'

    registry = parse_registry(SITES + PI1 + replacement + revoked, "f.toml")

    assert [agent.id for agent in registry.agents] == ["s0001-pi2"]
    assert registry.agents[0].publishes_for == ("s0001-pi2", "s0001-pos1", "s0001-env1")
    assert registry.listed == {"s0001-pi1", "s0001-pi2"}
    revocation = registry.revocation("s0001-pi1")
    assert revocation is not None and revocation.reason == "stolen"


def test_an_appended_agent_block_reads_back_as_the_agent() -> None:
    pi = Agent("s0001-pi3", "s0001", ("s0001-pos7",))
    registry = parse_registry(SITES + agent_block(pi), "f.toml")
    assert registry.agents == (pi,)


def test_the_shipped_registries_are_valid() -> None:
    root = Path(__file__).parents[2]
    stack = load_registry(root / "deploy" / "registry.toml")
    assert (stack.gateways, stack.clouds, stack.agents) == (("gw1", "gw2"), ("cloud",), ())
    example = load_registry(root / "broker" / "deploy" / "registry.example.toml")
    assert [agent.id for agent in example.agents] == ["s0001-pi1"]  # s0002-pi1 is revoked


def test_a_missing_registry_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"registry.toml: cannot read the registry"):
        load_registry(tmp_path / "registry.toml")
